//! YAML that Kubernetes reads back as written.
//!
//! serde_yaml writes YAML 1.2, where `N` is a string; the API server and
//! kubectl read YAML 1.1, where `N`, `y`, `on` and friends are booleans. The
//! CRD's printer column "N" then arrives as `false` and the whole CRD is
//! refused. Such scalars are quoted here.

const YAML11_BOOLEANS: &[&str] = &[
    "y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO", "on", "On", "ON", "off", "Off",
    "OFF",
];

fn quote_if_boolean(scalar: &str) -> String {
    if YAML11_BOOLEANS.contains(&scalar) {
        format!("'{scalar}'")
    } else {
        scalar.to_string()
    }
}

/// Quotes every plain scalar that YAML 1.1 would read as a boolean.
pub fn yaml11_safe(yaml: &str) -> String {
    let mut out = String::with_capacity(yaml.len());
    for line in yaml.lines() {
        let indent = line.len() - line.trim_start().len();
        let (lead, body) = line.split_at(indent);
        let (dash, body) = match body.strip_prefix("- ") {
            Some(rest) => ("- ", rest),
            None => ("", body),
        };
        let fixed = match body.split_once(": ") {
            Some((key, value)) => format!("{}: {}", quote_if_boolean(key), quote_if_boolean(value)),
            None => match body.strip_suffix(':') {
                Some(key) => format!("{}:", quote_if_boolean(key)),
                None if !dash.is_empty() => quote_if_boolean(body),
                None => body.to_string(),
            },
        };
        out.push_str(lead);
        out.push_str(dash);
        out.push_str(&fixed);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_yaml11_booleans_and_nothing_else() {
        let yaml = "- jsonPath: .spec.replicationFactor\n  name: N\n  type: integer\n- N\nreplicas: 3\nnote: Nope\non: yes\n";
        assert_eq!(
            yaml11_safe(yaml),
            "- jsonPath: .spec.replicationFactor\n  name: 'N'\n  type: integer\n- 'N'\nreplicas: 3\nnote: Nope\n'on': 'yes'\n"
        );
    }
}
