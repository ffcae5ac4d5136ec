//! How the binaries print a failure: one line, the chain of causes joined once.

use std::error::Error;

/// `err` and its causes as one line, `what: cause: deeper cause`, leaving out a cause whose
/// text the line already holds (many errors repeat their source in their own message).
pub fn one_line(err: &(dyn Error + 'static)) -> String {
    let mut line = err.to_string();
    let mut cause = err.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !text.is_empty() && !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        cause = c.source();
    }
    line.replace('\n', " ")
}

/// A binary's exit: 0 on success; otherwise the error printed to stderr as one line
/// (`error: ...`, [`one_line`]) and 1.
pub fn exit<E: AsRef<dyn Error + Send + Sync + 'static>>(
    result: Result<(), E>,
) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            let e: &(dyn Error + 'static) = e.as_ref();
            eprintln!("error: {}", one_line(e));
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot read {path}: {source}")]
    struct Read {
        path: &'static str,
        source: std::io::Error,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("cannot start the server")]
    struct Start(#[source] Read);

    #[test]
    fn a_chain_is_one_line_and_no_cause_is_repeated() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let err = Start(Read {
            path: "cert.pem",
            source: io,
        });
        assert_eq!(
            one_line(&err),
            "cannot start the server: cannot read cert.pem: no such file"
        );
    }
}
