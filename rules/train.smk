# Training stages: `train_detp` (DetP and its discriminators, paper Sec. 3.2) and `train_rcan`
# (RCAN x4 on the shards' detail patch pairs, Eq. 19). Each asks for one GPU (profiles/local runs
# them one at a time; profiles/slurm on the GPU partition).
# checkpoint.pt is deliberately not an output: Snakemake would delete it before rerunning a killed
# job, and the stage resumes from it.


rule train_detp:
    input:
        index=RESULTS.shard_index,
    output:
        model=RESULTS.stage("train_detp") / "final.pt",
        metrics=RESULTS.stage("train_detp") / "metrics.json",
        summary=RESULTS.summary("train_detp"),
        samples=RESULTS.stage("train_detp") / "samples.png",
    params:
        config=CONFIG,
        settings=settings("train_detp"),
    log:
        RESULTS.log("train_detp"),
    benchmark:
        RESULTS.benchmark("train_detp")
    conda:
        ENV
    threads: config["train_detp"]["threads"]
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=240,
    shell:
        "facedet3d train-detp --config {params.config} > {log} 2>&1"


rule train_rcan:
    input:
        index=RESULTS.shard_index,
    output:
        model=RESULTS.stage("train_rcan") / "final.pt",
        metrics=RESULTS.stage("train_rcan") / "metrics.json",
        summary=RESULTS.summary("train_rcan"),
        samples=RESULTS.stage("train_rcan") / "samples.png",
    params:
        config=CONFIG,
        settings=settings("train_rcan"),
    log:
        RESULTS.log("train_rcan"),
    benchmark:
        RESULTS.benchmark("train_rcan")
    conda:
        ENV
    threads: config["train_rcan"]["threads"]
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=120,
    shell:
        "facedet3d train-rcan --config {params.config} > {log} 2>&1"
