"""Monitoring for the Kubernetes deployment: Grafana dashboards and Prometheus alert rules, in code.

`python -m deploy.monitoring` writes them under ``k8s/base/monitoring/`` (a test regenerates them
and fails on drift). Every query reads the series the farm exports through Ray's metrics agent
(``ray_farm_*``, see `farm.metrics`) and Ray's own node metrics (``ray_node_*``).
"""
