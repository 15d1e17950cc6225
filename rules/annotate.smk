# Stage `annotate`: AU intensities, FaceNet identity embedding and age features per image.


rule annotate_chunk:
    input:
        records=f"{RESULTS}/extract/chunks/{{chunk}}.h5",
    output:
        records=f"{RESULTS}/annotate/chunks/{{chunk}}.h5",
        rejects=f"{RESULTS}/annotate/chunks/{{chunk}}.rejects.csv",
    params:
        config=CONFIG,
        settings=config["annotate"],
    log:
        f"{LOGS}/annotate/chunk_{{chunk}}.log",
    benchmark:
        f"{BENCHMARKS}/annotate/chunk_{{chunk}}.tsv"
    conda:
        ENV
    resources:
        mem_mb=2000,
        runtime=30,
    shell:
        "facedet3d annotate --config {params.config} --chunk {wildcards.chunk} > {log} 2>&1"


rule annotate:
    input:
        annotate_chunk_records,
    output:
        summary=f"{RESULTS}/annotate/summary.json",
        rejects=f"{RESULTS}/annotate/rejects.csv",
    params:
        config=CONFIG,
    log:
        f"{LOGS}/annotate.log",
    conda:
        ENV
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "facedet3d annotate --config {params.config} --merge > {log} 2>&1"
