"""One training round, phase by phase (``backend.pipeline.run_training_round`` runs them in order).

- ``progress``: the round's status callback and the seconds each phase took (``RoundRun``);
- ``configs``: the model and training configs the settings stand for;
- ``collect``: the project's tasks, split by the label rule, and the labeled images;
- ``representation``: where the backbone starts from (configured or self-supervised weights);
- ``train``: the model trained in the mode the labels and hardware call for, the pool scored;
- ``score``: the pool scored in bounded chunks and ranked by the strategy;
- ``predictions``: each scored task's prediction (label, probability, score, cluster);
- ``publish``: the checkpoint saved, the predictions pushed, the version published, the views;
- ``cold_start``: the round for too few labels (a TypiClust ranking, no model);
- ``summary``: the round's typed summary (``RoundSummary``) and its plain form for RQ and /status.
"""
