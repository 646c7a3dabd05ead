"""The control plane: desired state of endpoints in the database, reconciled into workers."""
