//! One container's state, labels and image, read from the container list —
//! never from an inspect.
//!
//! bollard logs every JSON response it decodes at `debug` ("Decoded into
//! string: …"), and `GET /containers/{id}/json` holds the container's
//! environment, secrets included (`tests/secrets_tracing.rs` catches it).
//! The list's summaries carry no environment, so the backend asks the list
//! whenever it needs to know whether a container runs, what it runs or
//! how it was labelled.

use std::collections::HashMap;

use bollard::errors::Error as BollardError;
use bollard::models::{ContainerSummary, ContainerSummaryStateEnum};
use bollard::query_parameters::ListContainersOptions;
use bollard::Docker;

/// The summary of the container named `name` (running or not), `None`
/// when there is none.
pub(crate) async fn summary(
    docker: &Docker,
    name: &str,
) -> Result<Option<ContainerSummary>, BollardError> {
    let options = ListContainersOptions {
        all: true,
        // The name filter matches parts of names: the exact one is picked
        // below.
        filters: Some(HashMap::from([(
            "name".to_string(),
            vec![name.to_string()],
        )])),
        ..Default::default()
    };
    let list = docker.list_containers(Some(options)).await?;
    let exact = format!("/{name}");
    Ok(list
        .into_iter()
        .find(|c| c.names.as_ref().is_some_and(|names| names.contains(&exact))))
}

/// True when `summary` says the container runs.
pub(crate) fn running(summary: &ContainerSummary) -> bool {
    summary.state == Some(ContainerSummaryStateEnum::RUNNING)
}

/// The exit code in a summary's `Status` of a container that has ended
/// (`Exited (3) 2 seconds ago`); `None` for any other status. The list is
/// the only place the backend reads state from (see the module docs), and
/// it gives the code in this text only.
pub(crate) fn exit_code_of_status(status: &str) -> Option<i32> {
    let rest = status.strip_prefix("Exited (")?;
    let (code, _) = rest.split_once(')')?;
    code.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exit_code_is_read_from_an_exited_containers_status() {
        assert_eq!(exit_code_of_status("Exited (3) 2 seconds ago"), Some(3));
        assert_eq!(
            exit_code_of_status("Exited (137) About a minute ago"),
            Some(137)
        );
        assert_eq!(
            exit_code_of_status("Exited (0) Less than a second ago"),
            Some(0)
        );
        assert_eq!(exit_code_of_status("Up 5 seconds"), None);
        assert_eq!(exit_code_of_status("Created"), None);
        assert_eq!(exit_code_of_status("Exited (x) now"), None);
        assert_eq!(exit_code_of_status("Dead"), None);
    }
}
