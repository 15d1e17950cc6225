# Stage `evaluate`: the paper's Fig. 4-8 for held-out people and real photos, an animation, every
# stage's figures in metrics.json, and report.html. The figures also go to Snakemake's own report
# (`snakemake --report report.zip`), with the captions in report/.


rule evaluate:
    input:
        models=[RESULTS.stage(s) / "final.pt" for s in ("train_detp", "train_rcan", "train_renderer")],
        summaries=[RESULTS.summary(s) for s in ("extract", "annotate", "shards", "train_detp", "train_rcan",
                                                "train_renderer")],
        manifest=RESULTS.manifest,
        ablation=ablation_weights,
    output:
        fig4=report(RESULTS.stage("evaluate") / "fig4_expression.png", caption="../report/fig4.rst",
                    category="Evaluation"),
        fig5=report(RESULTS.stage("evaluate") / "fig5_details.png", caption="../report/fig5.rst",
                    category="Evaluation"),
        fig6=report(RESULTS.stage("evaluate") / "fig6_views.png", caption="../report/fig6.rst",
                    category="Evaluation"),
        fig7=report(RESULTS.stage("evaluate") / "fig7_lighting.png", caption="../report/fig7.rst",
                    category="Evaluation"),
        gif=report(RESULTS.stage("evaluate") / "animation.gif", caption="../report/animation.rst",
                   category="Evaluation"),
        html=report(RESULTS.stage("evaluate") / "report.html", caption="../report/report.rst",
                    category="Report"),
        metrics=RESULTS.stage("evaluate") / "metrics.json",
        rejects=RESULTS.stage("evaluate") / "rejects.csv",
        summary=RESULTS.summary("evaluate"),
    params:
        config=CONFIG,
        settings=settings("evaluate"),
    log:
        RESULTS.log("evaluate"),
    benchmark:
        RESULTS.benchmark("evaluate")
    conda:
        ENV
    threads: config["evaluate"]["threads"]
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=60,
    shell:
        "facedet3d evaluate --config {params.config} > {log} 2>&1"
