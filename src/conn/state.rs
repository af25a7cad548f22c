//! The connection lifecycle: a pure transition function, unit-tested including illegal moves.
//!
//! Life is one axis; the protocol stage (HTTP, SSE, frames) is another, kept in `conn`. Each life
//! state names the events it accepts and the deadline the connection arms while in it:
//!
//! | state      | accepts                                                    | deadline armed          |
//! |------------|------------------------------------------------------------|-------------------------|
//! | `Active`   | Exchanged, PeerClosed, Drain, Expired, Force               | header / body / write stall |
//! | `Idle`     | RequestStarted, PeerClosed, Drain, Expired, Force          | idle (keep-alive)       |
//! | `Graceful` | Drain, Flushed, PeerClosed, Expired, Force                 | grace                   |
//! | `Closed`   | nothing: resources are released, the slot is gone          | none                    |
//!
//! `Active` covers reading a request, writing responses and streaming (SSE or frames); which
//! deadline it arms depends on the stage. A forced close is `Force` from any live state: the queue
//! is dropped and the socket closed at once.

/// Where a connection is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Life {
    /// Reading a request, writing responses, or streaming.
    Active,
    /// Keep-alive: no request in progress and no output pending.
    Idle,
    /// Winding down: no new input is acted upon; queued output is flushed (and owed responses
    /// awaited), the write side shut, and the peer's FIN awaited until the grace deadline.
    Graceful,
    /// Gone. Reached once, by one of the close paths, all of which end in `Server::close`.
    Closed,
}

/// What happens to a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LifeEvent {
    /// Bytes of a new request arrived on an idle connection.
    RequestStarted,
    /// A non-streaming exchange finished: response written, nothing buffered. `keep_alive` tells
    /// whether the connection may carry another request.
    Exchanged {
        /// The connection may be reused.
        keep_alive: bool,
    },
    /// The peer sent FIN. With output still to deliver the connection winds down gracefully.
    PeerClosed {
        /// Output is still queued, or owed (a response waiting for the backplane).
        output_pending: bool,
    },
    /// Shutdown or a protocol error asks the connection to finish gracefully.
    Drain,
    /// Everything queued has been written and the write side shut (Graceful only).
    Flushed,
    /// The armed deadline passed.
    Expired,
    /// Close now, dropping any queued output.
    Force,
}

/// A transition the state machine does not allow: a bug in the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InvalidTransition {
    /// State it happened in.
    pub from: Life,
    /// Event that was not accepted.
    pub event: LifeEvent,
}

impl Life {
    /// The state after `event`.
    pub fn next(self, event: LifeEvent) -> Result<Life, InvalidTransition> {
        use Life::*;
        use LifeEvent::*;
        let next = match (self, event) {
            (Closed, _) => None,
            (_, Force) => Some(Closed),
            (Active, Exchanged { keep_alive: true }) => Some(Idle),
            (Active, Exchanged { keep_alive: false }) => Some(Graceful),
            (Idle, RequestStarted) => Some(Active),
            (
                Active,
                PeerClosed {
                    output_pending: true,
                },
            ) => Some(Graceful),
            (Active | Idle | Graceful, PeerClosed { .. }) => Some(Closed),
            (Active, Drain) => Some(Graceful),
            (Idle, Drain) => Some(Closed),
            (Graceful, Drain) => Some(Graceful),
            (Graceful, Flushed) => Some(Graceful),
            (Active | Idle | Graceful, Expired) => Some(Closed),
            _ => None,
        };
        next.ok_or(InvalidTransition { from: self, event })
    }
}

#[cfg(test)]
mod tests {
    use super::Life::*;
    use super::LifeEvent::*;
    use super::*;

    const ALL_EVENTS: [LifeEvent; 9] = [
        RequestStarted,
        Exchanged { keep_alive: true },
        Exchanged { keep_alive: false },
        PeerClosed {
            output_pending: true,
        },
        PeerClosed {
            output_pending: false,
        },
        Drain,
        Flushed,
        Expired,
        Force,
    ];

    #[test]
    fn keep_alive_cycle() {
        let life = Active.next(Exchanged { keep_alive: true }).unwrap();
        assert_eq!(life, Idle);
        assert_eq!(life.next(RequestStarted), Ok(Active));
        assert_eq!(Active.next(Exchanged { keep_alive: false }), Ok(Graceful));
    }

    #[test]
    fn every_live_state_can_be_forced_or_expire() {
        for life in [Active, Idle, Graceful] {
            assert_eq!(life.next(Force), Ok(Closed));
            assert_eq!(life.next(Expired), Ok(Closed));
        }
    }

    #[test]
    fn graceful_paths() {
        assert_eq!(Active.next(Drain), Ok(Graceful));
        assert_eq!(
            Idle.next(Drain),
            Ok(Closed),
            "nothing in flight: close at once"
        );
        assert_eq!(
            Graceful.next(Drain),
            Ok(Graceful),
            "a second shutdown request is harmless"
        );
        assert_eq!(Graceful.next(Flushed), Ok(Graceful));
        assert_eq!(
            Graceful.next(PeerClosed {
                output_pending: false
            }),
            Ok(Closed)
        );
        assert_eq!(
            Active.next(PeerClosed {
                output_pending: true
            }),
            Ok(Graceful)
        );
        assert_eq!(
            Active.next(PeerClosed {
                output_pending: false
            }),
            Ok(Closed)
        );
    }

    #[test]
    fn illegal_moves_are_reported() {
        let illegal = [
            (Active, RequestStarted),
            (Active, Flushed),
            (Idle, Exchanged { keep_alive: true }),
            (Idle, Flushed),
            (Graceful, RequestStarted),
            (Graceful, Exchanged { keep_alive: true }),
        ];
        for (from, event) in illegal {
            assert_eq!(from.next(event), Err(InvalidTransition { from, event }));
        }
        for event in ALL_EVENTS {
            assert!(
                Closed.next(event).is_err(),
                "Closed accepts nothing: {event:?}"
            );
        }
    }

    #[test]
    fn exhaustive_table_has_no_path_back_from_closed() {
        // Walk every reachable state: Closed is absorbing and reachable from every state.
        let mut seen = vec![Active];
        let mut i = 0;
        while i < seen.len() {
            for event in ALL_EVENTS {
                if let Ok(next) = seen[i].next(event) {
                    if !seen.contains(&next) {
                        seen.push(next);
                    }
                }
            }
            i += 1;
        }
        assert_eq!(seen.len(), 4);
    }
}
