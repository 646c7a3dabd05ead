"""The `agentwharf` command. It talks to the platform over HTTP like any client; only `up`
and `down` touch the local process."""
