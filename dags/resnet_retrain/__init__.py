"""Helpers of the retraining DAG (dags/retrain.py): light modules only (stdlib + yaml).

Nothing here imports tensorflow, keras, dvc, boto3, sklearn or matplotlib at module level,
so the DAG file parses in milliseconds; the stages themselves run in subprocesses.
"""
