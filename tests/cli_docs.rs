//! `gatehouse completions` and `gatehouse man`, generated from the clap definition: the bash
//! script is valid and completes, and the man page names every command and subcommand.

use std::process::Command;

fn gatehouse(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(args)
        .output()
        .expect("run gatehouse");
    assert!(
        out.status.success(),
        "gatehouse {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// Every command path (`["config", "show"]`), read from the binary's own `--help`.
fn command_paths(prefix: &[String], out: &mut Vec<Vec<String>>) {
    let mut args: Vec<&str> = prefix.iter().map(String::as_str).collect();
    args.push("--help");
    let help = gatehouse(&args);
    let Some((_, listed)) = help.split_once("Commands:\n") else {
        return;
    };
    for line in listed.lines().take_while(|l| !l.trim().is_empty()) {
        let name = line.split_whitespace().next().unwrap_or_default();
        if name.is_empty() || name == "help" {
            continue;
        }
        let mut path = prefix.to_vec();
        path.push(name.to_string());
        out.push(path.clone());
        if out.len() < 100 {
            command_paths(&path, out);
        }
    }
}

#[test]
fn the_man_page_has_every_command_and_renders_cleanly() {
    let page = gatehouse(&["man"]);
    assert!(page.starts_with(".TH GATEHOUSE 1 "), "{page}");
    let mut paths = Vec::new();
    command_paths(&[], &mut paths);
    for expected in [
        &["config", "show"][..],
        &["completions"],
        &["man"],
        &["run"],
    ] {
        assert!(
            paths.iter().any(|p| p == expected),
            "{expected:?} not in {paths:?}"
        );
    }
    for path in &paths {
        let heading = format!(".SS \"gatehouse {}", path.join(" "));
        assert!(page.contains(&heading), "no {heading:?} in:\n{page}");
    }
    // Options are there with their defaults.
    assert!(page.contains("\\fB\\-\\-upgrade\\-sock\\fR"), "{page}");
    assert!(page.contains("Default: gateway.toml."), "{page}");

    // groff reads it without a warning.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gatehouse.1");
    std::fs::write(&file, &page).unwrap();
    let groff = Command::new("groff")
        .args(["-man", "-ww", "-z"])
        .arg(&file)
        .output()
        .expect("groff (apt-get install groff-base)");
    assert!(
        groff.status.success() && groff.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&groff.stderr)
    );
}

#[test]
fn the_bash_completion_is_valid_and_completes_commands() {
    let script = gatehouse(&["completions", "bash"]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gatehouse.bash");
    std::fs::write(&file, &script).unwrap();
    let syntax = Command::new("bash").arg("-n").arg(&file).output().unwrap();
    assert!(
        syntax.status.success(),
        "bash -n: {}",
        String::from_utf8_lossy(&syntax.stderr)
    );
    // What bash itself would offer after `gatehouse con<TAB>` and `gatehouse config <TAB>`.
    let complete = |words: &str, current: usize| {
        let out = Command::new("bash")
            .arg("-c")
            .arg(format!(
                "source {}; COMP_WORDS=({words}); COMP_CWORD={current}; _gatehouse gatehouse \"${{COMP_WORDS[{current}]}}\" \"${{COMP_WORDS[{}]}}\"; echo \"${{COMPREPLY[@]}}\"",
                file.display(),
                current - 1
            ))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(complete("gatehouse con", 1), "config");
    assert!(complete("gatehouse comp", 1).contains("completions"));
    assert!(complete("gatehouse config ''", 2).contains("show"));
}

#[test]
fn zsh_and_fish_completions_are_generated() {
    for shell in ["zsh", "fish"] {
        let script = gatehouse(&["completions", shell]);
        assert!(script.contains("gatehouse"), "{shell}: {script}");
        assert!(script.contains("show"), "{shell} lacks `config show`");
    }
    let refused = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
}
