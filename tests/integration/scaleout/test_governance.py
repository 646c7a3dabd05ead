"""Governance again where its state lives in PostgreSQL: agentwharf's principals, tokens and
grants, and MLflow's basic-auth store (users, experiment and registered-model permissions),
which MLflow's server and the platform's bridge both keep in the same database.

A subset: every test of the SQLite suite that needs no relay agents (whose four extra deploys
cost more than a minute and test credential minting, which no database changes).
"""

# In the SQLite module's order: pytest runs them in the order they are bound here, and the
# later ones build on the grants of the earlier ones (as they do there).
from tests.integration.test_governance import (  # noqa: F401  (collected here again, with their fixtures)
    people,
    shared,
    test_every_route_answers_401_without_a_token,
    test_bad_tokens_are_refused,
    test_deploying_a_model_you_may_not_deploy_is_403_and_creates_nothing,
    test_endpoint_levels_give_exactly_their_rights,
    test_agents_set_permissions_shares_every_endpoint_of_a_model,
    test_cli_manages_people_tokens_and_grants,
)
