# Training stages: `train_detp` (DetP and its discriminators, paper Sec. 3.2), `train_rcan`
# (RCAN x4 on the shards' detail patch pairs, Eq. 19) and `train_renderer` (R, Sec. 3.3; its
# ablation without AugW and DSL is `train_renderer_ablation`). Each asks for one GPU per device
# (config `devices`; above 1 the stage runs that many processes under torchrun) and threads and
# memory per device; profiles/local runs them one at a time, profiles/slurm on the GPU partition.
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
    threads: training_threads("train_detp")
    resources:
        gpu=training_devices("train_detp"),
        mem_mb=8000 * training_devices("train_detp"),
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
    threads: training_threads("train_rcan")
    resources:
        gpu=training_devices("train_rcan"),
        mem_mb=8000 * training_devices("train_rcan"),
        runtime=120,
    shell:
        "facedet3d train-rcan --config {params.config} > {log} 2>&1"


rule train_renderer:
    input:
        index=RESULTS.shard_index,
        manifest=RESULTS.manifest,
    output:
        model=RESULTS.stage("train_renderer") / "final.pt",
        metrics=RESULTS.stage("train_renderer") / "metrics.json",
        summary=RESULTS.summary("train_renderer"),
        samples=RESULTS.stage("train_renderer") / "samples.png",
    params:
        config=CONFIG,
        settings=settings("train_renderer"),
    log:
        RESULTS.log("train_renderer"),
    benchmark:
        RESULTS.benchmark("train_renderer")
    conda:
        ENV
    threads: training_threads("train_renderer")
    resources:
        gpu=training_devices("train_renderer"),
        mem_mb=8000 * training_devices("train_renderer"),
        runtime=240,
    shell:
        "facedet3d train-renderer --config {params.config} > {log} 2>&1"


# Not in `make demo`: `make ablation` asks for it.
rule train_renderer_ablation:
    input:
        index=RESULTS.shard_index,
        manifest=RESULTS.manifest,
        full=RESULTS.stage("train_renderer") / "metrics.json",
    output:
        model=RESULTS.stage("train_renderer_ablation") / "final.pt",
        metrics=RESULTS.stage("train_renderer_ablation") / "metrics.json",
        summary=RESULTS.summary("train_renderer_ablation"),
        samples=RESULTS.stage("train_renderer_ablation") / "samples.png",
        comparison=RESULTS.stage("train_renderer_ablation") / "comparison.md",
    params:
        config=CONFIG,
        settings=settings("train_renderer_ablation"),
    log:
        RESULTS.log("train_renderer_ablation"),
    benchmark:
        RESULTS.benchmark("train_renderer_ablation")
    conda:
        ENV
    threads: training_threads("train_renderer_ablation")
    resources:
        gpu=training_devices("train_renderer_ablation"),
        mem_mb=8000 * training_devices("train_renderer_ablation"),
        runtime=240,
    shell:
        "facedet3d train-renderer-ablation --config {params.config} > {log} 2>&1"
