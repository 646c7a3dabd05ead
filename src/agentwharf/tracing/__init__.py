"""Durable tracing: every served request becomes an MLflow trace and an inference-table row.

    worker  --capture-->  record (RECORD frame)  --gateway-->  spool (fsync'd, group commit)
                                                                  |
                                             writer process  <----+  batches into MLflow's
                                                                     trace tables and aw_inference_log

Nothing goes through MLflow's async exporter, whose queue drops traces when full.
"""
