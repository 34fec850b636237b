//! Running third-party code that may panic on bad input (a PDF parser, a GGUF reader) so that a
//! panic becomes an error message instead of ending the run or printing a backtrace.
//!
//! A panic hook is chained in front of the current one, once per process. It is silent only on
//! a thread that is inside [`catch_quietly`], where it stores the panic's message and location
//! for the caller; every other panic is reported as before.

use std::cell::RefCell;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;

thread_local! {
    /// `Some` while this thread runs guarded code: the message of a panic raised meanwhile.
    static CAUGHT_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Runs `f`; a panic inside it becomes `Err(message (at file:line))`, printed nowhere.
///
/// `f` must leave nothing of the caller's half-updated when it unwinds (it is treated as
/// unwind-safe): pass it only code whose state is dropped with the error.
pub fn catch_quietly<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    install_quiet_hook();
    // Nested guards: the outer one's slot is restored afterwards.
    let outer = CAUGHT_PANIC.with(|c| c.borrow_mut().replace(String::new()));
    let result = panic::catch_unwind(AssertUnwindSafe(f));
    let caught = CAUGHT_PANIC.with(|c| std::mem::replace(&mut *c.borrow_mut(), outer));
    result.map_err(|payload| {
        caught
            .filter(|m| !m.is_empty())
            .or_else(|| payload_message(payload.as_ref()))
            .unwrap_or_else(|| "unknown error".to_string())
    })
}

fn install_quiet_hook() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            let stored = CAUGHT_PANIC
                .try_with(|c| match c.try_borrow_mut() {
                    Ok(mut slot) => match slot.as_mut() {
                        Some(message) => {
                            *message = info.payload_as_str().unwrap_or_default().to_string();
                            if let Some(at) = info.location() {
                                message.push_str(&format!(
                                    " (at {}:{})",
                                    short_path(at.file()),
                                    at.line()
                                ));
                            }
                            true
                        }
                        None => false,
                    },
                    Err(_) => false,
                })
                .unwrap_or(false);
            if !stored {
                previous(info);
            }
        }));
    });
}

/// `…/registry/src/index…/crate-1.2.3/src/x.rs` → `crate-1.2.3/src/x.rs`.
fn short_path(file: &str) -> &str {
    file.split_once("/registry/src/")
        .and_then(|(_, rest)| rest.split_once('/'))
        .map_or(file, |(_, short)| short)
}

fn payload_message(payload: &(dyn std::any::Any + Send)) -> Option<String> {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_its_message_and_location() {
        let caught = catch_quietly(|| panic!("boom {}", 7)).expect_err("caught");
        assert!(caught.starts_with("boom 7 (at "), "{caught}");
        assert!(caught.contains("panic_guard.rs:"), "{caught}");
    }

    #[test]
    fn a_value_passes_through() {
        assert_eq!(catch_quietly(|| 3), Ok(3));
    }

    #[test]
    fn nested_guards_each_see_their_own_panic() {
        let outer = catch_quietly(|| {
            let inner = catch_quietly(|| panic!("inner"));
            assert!(inner.expect_err("caught").starts_with("inner"));
            panic!("outer");
        });
        assert!(outer.expect_err("caught").starts_with("outer"));
    }

    #[test]
    fn short_paths_drop_the_registry_prefix() {
        assert_eq!(
            short_path("/root/.cargo/registry/src/index.crates.io-1/lopdf-0.3/src/x.rs"),
            "lopdf-0.3/src/x.rs"
        );
        assert_eq!(short_path("src/a.rs"), "src/a.rs");
    }
}
