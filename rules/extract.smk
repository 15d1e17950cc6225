# Stages `ingest` and `extract` ("FDS extraction", paper Eq. 1).
# `ingest` is a checkpoint: the number of extract chunks is known once the manifest exists.


checkpoint ingest:
    input:
        ingest_inputs,
    output:
        manifest=f"{RESULTS}/data/manifest.csv",
        summary=f"{RESULTS}/ingest/summary.json",
        rejects=f"{RESULTS}/ingest/rejects.csv",
    params:
        config=CONFIG,
        data=config["data"],
        settings=config["ingest"],
    log:
        f"{LOGS}/ingest.log",
    conda:
        ENV
    resources:
        mem_mb=1000,
        runtime=20,
    shell:
        "facedet3d ingest --config {params.config} > {log} 2>&1"


rule extract_chunk:
    input:
        manifest=f"{RESULTS}/data/manifest.csv",
    output:
        records=f"{RESULTS}/extract/chunks/{{chunk}}.h5",
        rejects=f"{RESULTS}/extract/chunks/{{chunk}}.rejects.csv",
    params:
        config=CONFIG,
        settings=config["extract"],
    log:
        f"{LOGS}/extract/chunk_{{chunk}}.log",
    benchmark:
        f"{BENCHMARKS}/extract/chunk_{{chunk}}.tsv"
    conda:
        ENV
    resources:
        mem_mb=3000,
        runtime=60,
    shell:
        "facedet3d extract --config {params.config} --chunk {wildcards.chunk} > {log} 2>&1"


rule extract:
    input:
        extract_chunk_records,
    output:
        summary=f"{RESULTS}/extract/summary.json",
        rejects=f"{RESULTS}/extract/rejects.csv",
        preview=f"{RESULTS}/extract/preview.png",
    params:
        config=CONFIG,
    log:
        f"{LOGS}/extract.log",
    conda:
        ENV
    resources:
        mem_mb=2000,
        runtime=20,
    shell:
        "facedet3d extract --config {params.config} --merge > {log} 2>&1"
