# Stage `shards`: DetP and RCAN training data in checksummed HDF5 shards (paper Sec. 3.2, Eq. 19).


rule shards:
    input:
        extract=chunk_records("extract"),
        annotate=chunk_records("annotate"),
        # The merges too: `--until shards` then leaves every summary the README points to.
        summaries=[RESULTS.summary("extract"), RESULTS.summary("annotate")],
    output:
        index=RESULTS.shard_index,
        summary=RESULTS.summary("shards"),
    params:
        config=CONFIG,
        settings=settings("shards"),
    log:
        RESULTS.log("shards"),
    benchmark:
        RESULTS.benchmark("shards")
    conda:
        ENV
    resources:
        mem_mb=4000,
        runtime=30,
    shell:
        "facedet3d shards --config {params.config} > {log} 2>&1"
