//! Finding the binaries under test: relaunch and the examples.

use super::*;

/// The relaunch binary built by cargo for this test run.
pub fn relaunch_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_relaunch"))
}

/// An example binary (`target/<profile>/examples/<name>`); `cargo test` builds them.
pub fn example_bin(name: &str) -> PathBuf {
    let exe = env::current_exe().expect("cannot locate the test binary (current_exe)");
    // target/<profile>/deps/<test binary> -> target/<profile>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .unwrap_or_else(|| panic!("unexpected test binary location {}", exe.display()));
    let path = profile_dir.join("examples").join(name);
    if !path.is_file() {
        panic!(
            "example binary {} not found: run `cargo build --examples` (or `cargo test`, which \
             builds the examples)",
            path.display()
        );
    }
    // `cargo test --test <file>` builds the binaries but not the examples: refuse to test an
    // old build of an example that was edited since.
    let source = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(format!("{name}.rs"));
    let modified = |p: &Path| fs::metadata(p).and_then(|m| m.modified()).ok();
    if let (Some(src), Some(bin)) = (modified(&source), modified(&path)) {
        if src > bin {
            panic!(
                "example binary {} is older than {}: run `cargo build --examples` (`cargo test \
                 --test <file>` does not rebuild examples; a plain `cargo test` does)",
                path.display(),
                source.display()
            );
        }
    }
    path
}

pub fn hello_bin() -> PathBuf {
    example_bin("hello")
}

pub fn probe_bin() -> PathBuf {
    example_bin("probe")
}

/// A path as `&str`, for argument lists. Test paths are always UTF-8.
pub fn s(path: &Path) -> &str {
    path.to_str().expect("test paths are UTF-8")
}
