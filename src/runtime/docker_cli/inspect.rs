//! Parsing `docker inspect <ids...>` output into [`ContainerInfo`].

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::runtime::ContainerInfo;

#[derive(Deserialize)]
struct Entry {
    #[serde(rename = "Name", default)]
    name: String,
    #[serde(rename = "State", default)]
    state: State,
    #[serde(rename = "Config", default)]
    config: Config,
}

#[derive(Deserialize, Default)]
struct State {
    #[serde(rename = "Status", default)]
    status: String,
    #[serde(rename = "ExitCode", default)]
    exit_code: Option<i32>,
}

#[derive(Deserialize, Default)]
struct Config {
    #[serde(rename = "Labels", default)]
    labels: Option<BTreeMap<String, String>>,
}

/// Parse the JSON array `docker inspect` prints: the name without its
/// leading `/`, `State.Status`, `State.ExitCode` of a container that has
/// ended, and the `cldpd.*` labels only. Blank input
/// (nothing was found) is an empty list.
pub(crate) fn parse_inspect(json: &str) -> Result<Vec<ContainerInfo>, serde_json::Error> {
    if json.trim().is_empty() {
        return Ok(Vec::new());
    }
    let entries: Vec<Entry> = serde_json::from_str(json)?;
    Ok(entries
        .into_iter()
        .map(|e| ContainerInfo {
            name: e.name.strip_prefix('/').unwrap_or(&e.name).to_string(),
            exit_code: e
                .state
                .exit_code
                .filter(|_| crate::runtime::has_ended(&e.state.status)),
            state: e.state.status,
            labels: e
                .config
                .labels
                .unwrap_or_default()
                .into_iter()
                .filter(|(k, _)| k.starts_with("cldpd."))
                .collect(),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_name_state_and_cldpd_labels() {
        let json = r#"[
          {"Id": "1e15", "Name": "/cldpd-web-0a1b2c3d-0",
           "State": {"Status": "running", "Running": true, "Pid": 42, "ExitCode": 0},
           "Config": {"Image": "cldpd-web", "Labels": {
              "cldpd.session": "web-0a1b2c3d", "cldpd.pod": "web",
              "maintainer": "someone", "cldpdx": "no"}}},
          {"Id": "2f26", "Name": "/other",
           "State": {"Status": "exited", "ExitCode": 3},
           "Config": {"Labels": null}}
        ]"#;
        let got = parse_inspect(json).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].name, "cldpd-web-0a1b2c3d-0");
        assert!(got[0].is_running());
        assert_eq!(got[0].exit_code, None, "a running container has no code");
        assert_eq!(got[0].label("cldpd.session"), Some("web-0a1b2c3d"));
        assert_eq!(got[0].labels.len(), 2, "{:?}", got[0].labels);
        assert_eq!(got[1].name, "other");
        assert_eq!(got[1].state, "exited");
        assert_eq!(got[1].exit_code, Some(3));
        assert!(got[1].labels.is_empty());
    }

    #[test]
    fn empty_and_blank_output() {
        assert!(parse_inspect("[]\n").unwrap().is_empty());
        assert!(parse_inspect("  \n").unwrap().is_empty());
        assert!(parse_inspect("Error: nope").is_err());
    }
}
