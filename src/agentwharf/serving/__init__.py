"""The serving split: the gateway routes requests, the supervisor owns worker processes, each
worker wraps one model version. See ``protocol`` for how the gateway and workers talk."""
