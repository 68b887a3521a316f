//! docs/architecture.md traces a RawPut and a RawGet hop by hop, naming the
//! file and function of each hop. This test keeps that trace true: every
//! file it names exists, the name that follows a file is defined in that
//! file, and every other function, type, variant or constant it names is
//! defined in the node's sources (or, for an RPC, in the `.proto`
//! contract).

use std::{fs, path::Path};

/// The sections of the architecture document that trace a request.
const TRACES: [&str; 2] = ["## The path of a RawPut", "## The path of a RawGet"];

/// Words in backticks that name no code: gRPC codes.
const NOT_CODE: [&str; 1] = ["UNAVAILABLE"];

fn is_identifier(word: &str) -> bool {
    let mut chars = word.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// How `name` would be defined in Rust source.
fn definitions(name: &str) -> Vec<String> {
    let mut forms = vec![
        format!("fn {name}("),
        format!("fn {name}<"),
        format!("struct {name} "),
        format!("struct {name}<"),
        format!("struct {name};"),
        format!("enum {name} "),
        format!("enum {name}<"),
        format!("trait {name} "),
        format!("trait {name}:"),
        format!("const {name}:"),
        format!("mod {name};"),
        format!("mod {name} "),
    ];
    // An enum variant: `Name,` `Name {` or `Name(` at the start of a line.
    if name.starts_with(|c: char| c.is_ascii_uppercase()) {
        forms.extend([
            format!("\n    {name},"),
            format!("\n    {name} {{"),
            format!("\n    {name}("),
        ]);
    }
    forms
}

fn defined_in(source: &str, name: &str) -> bool {
    definitions(name).iter().any(|form| source.contains(form))
}

/// Every `.rs` file under `dir`, with its text.
fn sources(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).expect("read node/src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            out.extend(sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = fs::read_to_string(&path).expect("read source");
            out.push((path.display().to_string(), text));
        }
    }
    out
}

/// The items of a section's lists, one per hop, with their continuation
/// lines.
fn hops(section: &str) -> Vec<String> {
    let mut hops: Vec<String> = Vec::new();
    for line in section.lines() {
        let trimmed = line.trim_start();
        let numbered = trimmed
            .split_once(". ")
            .is_some_and(|(n, _)| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()));
        if numbered || trimmed.starts_with("- ") || hops.is_empty() {
            hops.push(String::new());
        }
        if let Some(hop) = hops.last_mut() {
            hop.push_str(line);
            hop.push('\n');
        }
    }
    hops
}

#[test]
fn every_hop_of_the_traces_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = fs::read_to_string(root.join("../docs/architecture.md")).expect("architecture.md");
    let src = root.join("src");
    let all = sources(&src);
    let contract =
        fs::read_to_string(root.join("../proto/ringkv/v1/rawkv.proto")).expect("rawkv.proto");
    let is_rpc = |word: &str| contract.contains(&format!("rpc {word}("));
    let mut checked = 0;
    for heading in TRACES {
        let start = doc
            .find(heading)
            .unwrap_or_else(|| panic!("docs/architecture.md has no section {heading}"));
        let rest = &doc[start + heading.len()..];
        let section = &rest[..rest.find("\n## ").unwrap_or(rest.len())];
        for hop in hops(section) {
            let mut file: Option<String> = None;
            for (i, token) in hop.split('`').enumerate() {
                if i % 2 == 0 {
                    continue;
                }
                if let Some(path) = token.strip_suffix(".rs") {
                    let path = src.join(format!("{path}.rs"));
                    assert!(path.exists(), "{heading}: {token} does not exist");
                    file = Some(fs::read_to_string(&path).expect("read named file"));
                    checked += 1;
                    continue;
                }
                // `Type::function(…)`: the path before any argument list.
                let token = token.split('(').next().unwrap_or(token).trim();
                let words: Vec<&str> = token.split("::").collect();
                if !words.iter().all(|w| is_identifier(w)) || NOT_CODE.contains(&token) {
                    continue;
                }
                // The first name after a file is that file's function.
                if let Some(text) = file.take() {
                    let name = words[words.len() - 1];
                    assert!(
                        defined_in(&text, name),
                        "{heading}: `{token}` is not defined in the file named before it"
                    );
                }
                for word in &words {
                    assert!(
                        all.iter().any(|(_, text)| defined_in(text, word)) || is_rpc(word),
                        "{heading}: `{token}` names {word}, which node/src does not define"
                    );
                    checked += 1;
                }
            }
        }
    }
    println!("architecture trace: {checked} names checked against node/src");
    assert!(checked > 40, "the traces name too few hops: {checked}");
}
