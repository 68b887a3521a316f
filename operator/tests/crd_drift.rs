//! `crds/kvcluster.yaml` (and the chart's copy) must be exactly what
//! `ringkv-operator crd` prints: nobody edits the CRD by hand.

use std::{path::Path, process::Command};

fn generated() -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_ringkv-operator"))
        .arg("crd")
        .output()
        .expect("run ringkv-operator crd");
    assert!(output.status.success());
    String::from_utf8(output.stdout).expect("utf-8")
}

fn committed(relative: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

#[test]
fn committed_crd_matches_the_generated_one() {
    let fresh = generated();
    for copy in [
        "crds/kvcluster.yaml",
        "charts/ringkv-operator/crds/kvcluster.yaml",
    ] {
        assert!(
            committed(copy) == fresh,
            "{copy} differs from `ringkv-operator crd`; regenerate it with \
             `cargo run -p ringkv-operator -- crd > {copy}`"
        );
    }
}

#[test]
fn crd_carries_scale_printer_columns_and_cel_rules() {
    let crd = generated();
    for needle in [
        "specReplicasPath: .spec.replicas",
        "statusReplicasPath: .status.replicas",
        "labelSelectorPath: .status.selector",
        "- kvc",
        "name: Ready",
        "name: Phase",
        "fieldPath: .readQuorum",
        "readQuorum %d exceeds replicationFactor %d''.format([self.readQuorum, self.replicationFactor])",
        "fieldPath: .writeQuorum",
        "replicas %d is below 1''.format([self])",
        "partitions is fixed when the cluster is created",
        "conflictResolution is fixed when the cluster is created",
    ] {
        assert!(crd.contains(needle), "CRD lacks {needle:?}");
    }
}
