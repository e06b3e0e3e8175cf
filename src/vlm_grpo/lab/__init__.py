"""Small CPU-sized laboratory: procedural data for tiny vision-language model experiments.

The lab is a plug-in (entry point `vlm_grpo.plugins: lab`): `register()` adds its data sets
(`lab-clevr`, `lab-superclevr`) and shipped base models (`lab-base`, `lab-base-cold`,
`lab-base-tools`, `lab-teacher`, a distillation teacher, and `lab-base-video`, the video base)
through the same public calls any user package would use, and the same scenes as multiple choice
(`lab-clevr-mc`, `lab-superclevr-mc`, with `task=multiple_choice`), and scenes whose objects are too
small to count without the `crop` tool (`lab-clevr-cluster`, `lab-superclevr-cluster`); and clips whose
count needs every frame (`lab-clips`, `lab-clips-transfer`, `lab-clips-frame`: see `clips`).
"""


def register() -> None:
    from ..data import register_dataset
    from ..models import register_model
    from . import clips, clusters, models, scenes
    from .sources import MC_SUFFIX, LabSource

    for domain in scenes.DOMAINS:
        register_dataset(domain, lambda images, task, domain=domain: LabSource(domain, task=task))
        register_dataset(
            domain + MC_SUFFIX, lambda images, task, domain=domain: LabSource(domain, task=task, multiple_choice=True)
        )
    for domain in scenes.DOMAINS:  # a counting scene in one cell of a large floor: `crop` finds it
        register_dataset(domain + clusters.SUFFIX, lambda images, task, domain=domain: clusters.ClusterSource(domain))
    clips.register()
    for name in models.BASES:
        register_model(name, models.factory(name))
