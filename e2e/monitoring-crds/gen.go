// Package crdgen pins the Prometheus Operator's API types, from which
// e2e/scripts/build-monitoring-crds.sh generates its CRDs with
// controller-gen, as the Prometheus Operator's own build does. The e2e test
// installs them to check the chart's ServiceMonitor, PodMonitor and
// PrometheusRule against the real schema.
package crdgen

import _ "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
