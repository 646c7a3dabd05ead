"""``agentwharf.agents``' deploy semantics again, on PostgreSQL with models in S3: each deploy
reads the model from the registry in PostgreSQL, its environment builder and workers fetch its
files from S3 through MLflow's artifact service, and its traces and rows land in PostgreSQL.

Left out (they test the control plane's own rules, which no store changes): a custom endpoint
name, the limit of fifteen served versions."""

# In the SQLite module's order (pytest runs them in the order they are bound here).
from tests.integration.test_deployments import (  # noqa: F401  (collected here again, on this package's platform)
    test_deploy_returns_the_guides_names_and_answers,
    test_worker_gets_the_endpoints_experiment_and_environment,
    test_new_version_takes_all_traffic_and_old_stays_reachable,
    test_bad_deploys_fail_clearly_and_change_nothing,
    test_deploying_a_served_version_again_is_refused,
    test_a_model_that_fails_to_load_raises_with_the_workers_error,
    test_a_failed_new_version_leaves_the_serving_one_untouched,
)
