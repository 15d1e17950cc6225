# Stage `synth`: the embedded synthetic face dataset with ground truth (README, "synthetic faces").


rule synth_chunk:
    output:
        records=RESULTS.chunk("synth", "{chunk}"),
        images=directory(RESULTS.synth_images("{chunk}")),
    params:
        config=CONFIG,
        settings=settings("synth"),
    log:
        RESULTS.log("synth", "{chunk}"),
    benchmark:
        RESULTS.benchmark("synth", "{chunk}")
    conda:
        ENV
    resources:
        mem_mb=3000,
        runtime=30,
    shell:
        "facedet3d synth --config {params.config} --chunk {wildcards.chunk} > {log} 2>&1"


rule synth:
    input:
        [RESULTS.chunk("synth", c) for c in synth_chunks()],
    output:
        manifest=RESULTS.synth_manifest,
        summary=RESULTS.summary("synth"),
    params:
        config=CONFIG,
        settings=settings("synth", "merge"),
    log:
        RESULTS.log("synth"),
    conda:
        ENV
    resources:
        mem_mb=2000,
        runtime=20,
    shell:
        "facedet3d synth --config {params.config} --merge > {log} 2>&1"


rule synth_figure:
    input:
        [RESULTS.chunk("synth", c) for c in synth_chunks()],
    output:
        RESULTS.contact_sheet,
    params:
        config=CONFIG,
        settings=settings("synth", "figure"),
    log:
        RESULTS.log("synth_figure"),
    conda:
        ENV
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "facedet3d synth --config {params.config} --figure > {log} 2>&1"


# Not in `rule all`: `make detail-net` trains the extractor's detail network on the synthetic
# set of configs/detail_net.yaml (its own seed and results folder).
rule detail_net:
    input:
        RESULTS.synth_manifest,
    output:
        weights=RESULTS.detail_net_weights,
        summary=RESULTS.summary("detail_net"),
    params:
        config=CONFIG,
        settings=settings("detail_net"),
    log:
        RESULTS.log("detail_net"),
    conda:
        ENV
    threads: 2
    resources:
        mem_mb=8000,
        runtime=120,
    shell:
        "facedet3d detail-net --config {params.config} > {log} 2>&1"
