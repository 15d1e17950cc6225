# Stage `annotate`: AU intensities, FaceNet identity embedding and age features per image.


rule annotate_chunk:
    input:
        records=RESULTS.chunk("extract", "{chunk}"),
    output:
        records=RESULTS.chunk("annotate", "{chunk}"),
        rejects=RESULTS.chunk_rejects("annotate", "{chunk}"),
    params:
        config=CONFIG,
        settings=settings("annotate"),
    log:
        RESULTS.log("annotate", "{chunk}"),
    benchmark:
        RESULTS.benchmark("annotate", "{chunk}")
    conda:
        ENV
    resources:
        mem_mb=2000,
        runtime=30,
    shell:
        "facedet3d annotate --config {params.config} --chunk {wildcards.chunk} > {log} 2>&1"


rule annotate:
    input:
        chunk_records("annotate"),
    output:
        summary=RESULTS.summary("annotate"),
        rejects=RESULTS.rejects("annotate"),
    params:
        config=CONFIG,
        settings=settings("annotate", "merge"),
    log:
        RESULTS.log("annotate"),
    conda:
        ENV
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "facedet3d annotate --config {params.config} --merge > {log} 2>&1"
