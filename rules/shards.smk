# Stage `shards`: DetP and RCAN training data in checksummed HDF5 shards (paper Sec. 3.2, Eq. 19).


rule shards:
    input:
        extract=extract_chunk_records,
        annotate=annotate_chunk_records,
    output:
        index=f"{RESULTS}/shards/index.json",
        summary=f"{RESULTS}/shards/summary.json",
    params:
        config=CONFIG,
        settings=config["shards"],
        seed=config["seed"],
    log:
        f"{LOGS}/shards.log",
    benchmark:
        f"{BENCHMARKS}/shards.tsv"
    conda:
        ENV
    resources:
        mem_mb=4000,
        runtime=30,
    shell:
        "facedet3d shards --config {params.config} > {log} 2>&1"
