# Stages `ingest` and `extract` ("FDS extraction", paper Eq. 1).
# `ingest` is a checkpoint: the number of extract chunks is known once the manifest exists.


checkpoint ingest:
    input:
        ingest_inputs,
    output:
        manifest=RESULTS.manifest,
        summary=RESULTS.summary("ingest"),
        rejects=RESULTS.rejects("ingest"),
    params:
        config=CONFIG,
        settings=settings("ingest"),
    log:
        RESULTS.log("ingest"),
    conda:
        ENV
    resources:
        mem_mb=1000,
        runtime=20,
    shell:
        "facedet3d ingest --config {params.config} > {log} 2>&1"


rule extract_chunk:
    input:
        manifest=RESULTS.manifest,
    output:
        records=RESULTS.chunk("extract", "{chunk}"),
        rejects=RESULTS.chunk_rejects("extract", "{chunk}"),
    params:
        config=CONFIG,
        settings=settings("extract"),
    log:
        RESULTS.log("extract", "{chunk}"),
    benchmark:
        RESULTS.benchmark("extract", "{chunk}")
    conda:
        ENV
    resources:
        mem_mb=3000,
        runtime=60,
    shell:
        "facedet3d extract --config {params.config} --chunk {wildcards.chunk} > {log} 2>&1"


rule extract:
    input:
        chunk_records("extract"),
    output:
        summary=RESULTS.summary("extract"),
        rejects=RESULTS.rejects("extract"),
        preview=RESULTS.extract_preview,
    params:
        config=CONFIG,
        settings=settings("extract", "merge"),
    log:
        RESULTS.log("extract"),
    conda:
        ENV
    resources:
        mem_mb=2000,
        runtime=20,
    shell:
        "facedet3d extract --config {params.config} --merge > {log} 2>&1"
