//! Helpers shared by the integration tests: the default model and the binary.
#![allow(dead_code)]

use std::path::PathBuf;

use assert_cmd::Command;

/// The default model; the tests need it installed (`scripts/fetch-model.sh`, run by `.ci/run`).
pub fn default_model() -> PathBuf {
    let path = docanalyze::model_source::default_model_path();
    assert!(
        path.exists(),
        "the default model is not installed at {}: run scripts/fetch-model.sh",
        path.display()
    );
    path
}

/// `docanalyze` with the default model, quiet, single-threaded logs off.
pub fn docanalyze() -> Command {
    let mut cmd = Command::cargo_bin("docanalyze").expect("binary built");
    cmd.env("DOCANALYZE_MODEL", default_model());
    cmd.env_remove("DOCANALYZE_LOG");
    cmd
}

pub fn repo_path(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}
