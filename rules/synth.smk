# Stage `synth`: the embedded synthetic face dataset with ground truth (DESIGN.md §2).


rule synth_chunk:
    output:
        records=f"{RESULTS}/synth/chunks/{{chunk}}.h5",
        images=directory(f"{RESULTS}/synth/images/{{chunk}}"),
    params:
        config=CONFIG,
        settings=config["synth"],
        seed=config["seed"],
    log:
        f"{LOGS}/synth/chunk_{{chunk}}.log",
    benchmark:
        f"{BENCHMARKS}/synth/chunk_{{chunk}}.tsv"
    conda:
        ENV
    resources:
        mem_mb=3000,
        runtime=30,
    shell:
        "facedet3d synth --config {params.config} --chunk {wildcards.chunk} > {log} 2>&1"


rule synth:
    input:
        expand(f"{RESULTS}/synth/chunks/{{chunk}}.h5", chunk=synth_chunks()),
    output:
        manifest=f"{RESULTS}/synth/manifest.csv",
        sheet=f"{RESULTS}/synth/contact_sheet.png",
        summary=f"{RESULTS}/synth/summary.json",
    params:
        config=CONFIG,
    log:
        f"{LOGS}/synth.log",
    conda:
        ENV
    resources:
        mem_mb=2000,
        runtime=20,
    shell:
        "facedet3d synth --config {params.config} --merge > {log} 2>&1"
