//! Every config under `tests/config/valid/` and the shipped examples under `deploy/` load; every
//! config under `tests/config/invalid/` is refused with an error that starts with the field path.

use std::path::{Path, PathBuf};

use dataplane::config::{HubConfig, Snapshot};

fn load(path: &Path) -> Result<Snapshot, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let raw = HubConfig::from_yaml(&text).map_err(|e| e.to_string())?;
    Snapshot::from_config(&raw).map_err(|e| e.to_string())
}

fn files(dir: &str) -> Vec<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut v: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    v.sort();
    v
}

#[test]
fn valid_configs_load() {
    let mut all = files("tests/config/valid");
    all.push(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/container/hub.yaml"));
    assert!(all.len() >= 4);
    for p in all {
        if let Err(e) = load(&p) {
            panic!("{} should load: {e}", p.display());
        }
    }
}

/// Each invalid file and the start of the error it must give: the field path first, so a bad
/// file is fixed in one go. A new file under `tests/config/invalid/` needs a row here.
const INVALID: &[(&str, &str)] = &[
    (
        "bad-duration.yaml",
        "limits.head_timeout: invalid duration \"soon\"",
    ),
    ("duplicate-upstream.yaml", "upstreams[1].name"),
    ("https-upstream.yaml", "upstreams[0].url"),
    ("load-factor-below-one.yaml", "upstreams[0].load_factor"),
    ("name-with-separator.yaml", "upstreams[0].name"),
    ("replicas-and-url.yaml", "upstreams[0].replicas"),
    ("replicas-empty.yaml", "upstreams[0].replicas"),
    (
        "unknown-field.yaml",
        "unknown field `upstream`, expected one of",
    ),
];

#[test]
fn invalid_configs_are_refused_naming_the_field() {
    let all = files("tests/config/invalid");
    let names: Vec<String> = all
        .iter()
        .map(|p| {
            p.file_name()
                .expect("file name")
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    let listed: Vec<&str> = INVALID.iter().map(|(f, _)| *f).collect();
    assert_eq!(
        names, listed,
        "every invalid config has exactly one row in INVALID"
    );
    for (p, (_, want)) in all.iter().zip(INVALID) {
        match load(p) {
            Ok(_) => panic!("{} should be refused", p.display()),
            Err(e) => assert!(
                e.starts_with(want),
                "{}: error should start with {want:?}: {e}",
                p.display()
            ),
        }
    }
}

#[test]
fn yaml_errors_name_the_field_path() {
    // Shape errors come from the YAML layer: the path of the offending field, then the reason.
    let table = [
        (
            "upstreams:\n  - name: a\n    url: http://127.0.0.1:1/mcp\n    colour: red\n",
            "upstreams[0]: unknown field `colour`",
        ),
        (
            "upstreams:\n  - name: a\n    url: http://127.0.0.1:1/mcp\n    request_timeout: soon\n",
            "upstreams[0].request_timeout: invalid duration \"soon\"",
        ),
        (
            "upstreams:\n  - name: a\n    url: http://127.0.0.1:1/mcp\n    pool_size: many\n",
            "upstreams[0].pool_size: invalid type",
        ),
        (
            "cluster:\n  refresh: 5 parsecs\n",
            "cluster.refresh: invalid duration",
        ),
        (
            "limits: {max_body_bytes: 1, colour: red}\n",
            "limits: unknown field `colour`",
        ),
    ];
    for (text, want) in table {
        let e = HubConfig::from_yaml(text).expect_err(text).to_string();
        assert!(e.starts_with(want), "{text}: {e}");
    }
    // The grammar accepts fractions (it did not before `meshgate-duration`).
    let c = HubConfig::from_yaml(
        "upstreams:\n  - name: a\n    url: http://127.0.0.1:1/mcp\n    request_timeout: 1.5s\n",
    )
    .expect("1.5s is a duration");
    assert_eq!(
        c.upstreams[0].request_timeout,
        std::time::Duration::from_millis(1500)
    );
}

#[test]
fn full_example_normalises() {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/config/valid/full.yaml");
    let s = load(&p).expect("loads");
    assert_eq!(s.workers, 2);
    assert_eq!(s.separator.as_deref(), Some("."));
    assert_eq!(s.limits.head_timeout, std::time::Duration::from_secs(5));
    assert_eq!(
        s.upstreams[0].request_timeout,
        std::time::Duration::from_secs(60)
    );
    assert_eq!(s.upstreams[1].replicas[0].path.as_ref(), "/");
    assert_eq!(s.session_ttl, std::time::Duration::from_secs(3600));
}

#[test]
fn unprefixed_name_collision_refuses_to_start_naming_both() {
    use loadtest::mock::{MockConfig, MockServer};
    // Two upstreams that both expose tool_0 … tool_9.
    let a = MockServer::start(MockConfig::default()).expect("mock a");
    let b = MockServer::start(MockConfig::default()).expect("mock b");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_meshgate"))
        .args(["--listen", "127.0.0.1:0", "--separator", "none"])
        .args(["--upstream", &format!("alpha={}", a.url())])
        .args(["--upstream", &format!("beta={}", b.url())])
        .output()
        .expect("run meshgate");
    assert!(!out.status.success(), "hub started despite a collision");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("collision")
            && err.contains("'alpha'")
            && err.contains("'beta'")
            && err.contains("tool_0"),
        "{err}"
    );
}
