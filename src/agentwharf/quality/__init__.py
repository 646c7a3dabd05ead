"""The quality loop: the same scorers in development, before a deploy and on live traffic.

    scorers         which registered scorers are active (MLflow's tables), built-in or custom
    online          scores live traces seconds after the writer stores them
    sandbox         runs custom @scorer code in processes of its own, limited and confined
    sandbox_runner  the program those processes run
    landlock        Linux Landlock: files, TCP and signals a process may reach
    scorer_envs     where a custom scorer's code runs (the platform's, the model's, a registered one)
    results         assessments on the traces, and their numbers for trends
    scoring_process online scoring's process, and the platform's handle on it
    online_config   starting scorers MLflow's server would refuse to start (not gateway judges)
    guard           who may see and change the scorers of an endpoint's experiment
    monitor         the platform's quality loop (scoring process, metrics, alerts, rules)
    trends          per-bucket figures of an endpoint and its versions
    exporter        those figures as Prometheus metrics
    alerts          alert rules, their evaluation and their signed webhooks
    review_rules    traces matching a filter sent to a labeling session as they appear
    gate            the champion/challenger evaluation gate (`agentwharf eval`)
"""
