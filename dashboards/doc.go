// Package dashboards owns what the monitoring team deploys beside Ferry:
// Grafana dashboards (*.json), Prometheus recording and alerting rules with
// their unit tests (prometheus/), Grafana provisioning (grafana/), the compose
// file for the whole stack, and the metrics catalog (README.md). It has no Go
// code of its own; its tests keep all of these consistent with each other,
// with promtool, and (in gateway/metrics_catalog_test.go) with the metrics the
// agent really registers. It imports nothing from Ferry.
package dashboards
