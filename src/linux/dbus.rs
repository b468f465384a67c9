//! A client of a D-Bus message bus: connect to a bus address, call a method with string
//! arguments, read the reply (nothing, a bool, a string, a list of strings) or the error the
//! service answered with. What asking a system service a question needs, and no more.
//!
//! Synchronous to its caller and single-threaded: [`with_bus`] blocks the calling thread
//! until the whole conversation is over, and starts no thread.

use std::fmt;
use std::time::Duration;

/// Where the system bus is, when the environment names it (as libdbus and godbus read it).
pub const SYSTEM_BUS_ENV: &str = "DBUS_SYSTEM_BUS_ADDRESS";
/// The system bus's address otherwise.
pub const SYSTEM_BUS_DEFAULT: &str = "unix:path=/run/dbus/system_bus_socket";
/// How long a call waits for its reply: libdbus's default, so a service that hangs fails the
/// caller instead of blocking it for good.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(25);

const BUS_NAME: &str = "org.freedesktop.DBus";
const BUS_PATH: &str = "/org/freedesktop/DBus";

/// The system bus's address: `$DBUS_SYSTEM_BUS_ADDRESS` when set and not empty, else the
/// default socket.
pub fn system_bus_address() -> String {
    std::env::var(SYSTEM_BUS_ENV)
        .ok()
        .filter(|a| !a.is_empty())
        .unwrap_or_else(|| SYSTEM_BUS_DEFAULT.to_string())
}

/// A method's reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Unit,
    Bool(bool),
    Str(String),
    Strs(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The bus at `address` could not be reached or refused us.
    Connect { address: String, reason: String },
    /// The service answered with a D-Bus error (`name`, e.g.
    /// `org.freedesktop.DBus.Error.ServiceUnknown`, and its message).
    Remote { name: String, message: String },
    /// The connection broke, or the reply was not one this client reads.
    Call(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Connect { address, reason } => write!(f, "cannot connect to the D-Bus bus at {address}: {reason}"),
            Error::Remote { name, message } if message.is_empty() => f.write_str(name),
            Error::Remote { name, message } => write!(f, "{name}: {message}"),
            Error::Call(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for Error {}

/// Connects to the bus at `address` (`unix:path=…` or `unix:abstract=…`; EXTERNAL
/// authentication as the caller's uid), runs `f` with the connection, and closes it.
///
/// All of it runs on the calling thread, inside one `zbus::block_on`: zbus's executor
/// (zruntime) starts a helper thread only for a connection that outlives a `block_on`, and this
/// one never does. So no thread ever runs beside the caller's (callers may switch network
/// namespaces later, and `setns` moves only the calling thread).
///
/// Only `unix:` transports: zbus resolves a `tcp:` host name, reads a `nonce-tcp:` file and
/// runs `autolaunch:` on a pool thread that outlives the call, so those are a connect error.
pub fn with_bus<T>(address: &str, f: impl AsyncFnOnce(&Bus) -> T) -> Result<T, Error> {
    if let Some(other) = address.split(';').find(|a| !a.is_empty() && !a.starts_with("unix:")) {
        return Err(Error::Connect {
            address: address.to_string(),
            reason: format!("{other:?}: only unix: addresses are used (no thread may start)"),
        });
    }
    zbus::block_on(async {
        let conn = zbus::connection::Builder::address(address)
            .method_timeout(CALL_TIMEOUT)
            .build()
            .await
            .map_err(|e| Error::Connect {
                address: address.to_string(),
                reason: e.to_string(),
            })?;
        let bus = Bus { conn };
        let out = f(&bus).await;
        // Closed here, inside the block_on, so that nothing of it is left to a helper.
        let _ = bus.conn.close().await;
        Ok(out)
    })
}

/// A connection to a bus, lent by [`with_bus`].
pub struct Bus {
    conn: zbus::Connection,
}

impl Bus {
    /// Whether some connection owns the well-known `name`.
    pub async fn name_has_owner(&self, name: &str) -> Result<bool, Error> {
        match self.call(BUS_NAME, BUS_PATH, BUS_NAME, "NameHasOwner", &[name]).await? {
            Value::Bool(b) => Ok(b),
            other => Err(Error::Call(format!("NameHasOwner answered {other:?}"))),
        }
    }

    /// Calls `iface.member` of object `path` at `dest` with string arguments (at most two).
    pub async fn call(&self, dest: &str, path: &str, iface: &str, member: &str, args: &[&str]) -> Result<Value, Error> {
        let c = &self.conn;
        let reply = match *args {
            [] => c.call_method(Some(dest), path, Some(iface), member, &()).await,
            [a] => c.call_method(Some(dest), path, Some(iface), member, &(a,)).await,
            [a, b] => c.call_method(Some(dest), path, Some(iface), member, &(a, b)).await,
            _ => Err(zbus::Error::Failure("more than two arguments".into())),
        };
        let reply = reply.map_err(|e| match e {
            zbus::Error::MethodError(name, msg, _) => Error::Remote {
                name: name.to_string(),
                message: msg.unwrap_or_default(),
            },
            e => Error::Call(format!("{iface}.{member}: {e}")),
        })?;
        let body = reply.body();
        let sig = body.signature().to_string();
        let bad = |e: zbus::Error| Error::Call(format!("{iface}.{member}: reply {sig:?}: {e}"));
        Ok(match sig.as_str() {
            "" => Value::Unit,
            "b" => Value::Bool(body.deserialize().map_err(bad)?),
            "s" => Value::Str(body.deserialize().map_err(bad)?),
            "as" => Value::Strs(body.deserialize().map_err(bad)?),
            _ => return Err(Error::Call(format!("{iface}.{member}: unexpected reply {sig:?}"))),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_system_bus_address_comes_from_the_environment_or_the_default() {
        // Read-only here: the variable is whatever the test process has; the rule is that
        // an empty value counts as unset.
        let want = match std::env::var(SYSTEM_BUS_ENV) {
            Ok(a) if !a.is_empty() => a,
            _ => SYSTEM_BUS_DEFAULT.to_string(),
        };
        assert_eq!(system_bus_address(), want);
    }

    #[test]
    fn transports_other_than_unix_are_refused_before_any_work() {
        for addr in [
            "tcp:host=localhost,port=1",
            "unix:path=/x;autolaunch:",
            "nonce-tcp:host=h",
        ] {
            match with_bus(addr, async |_| ()) {
                Err(Error::Connect { address, reason }) => {
                    assert_eq!(address, addr);
                    assert!(reason.contains("only unix:"), "{reason}");
                }
                Err(e) => panic!("{addr}: {e}"),
                Ok(_) => panic!("connected to {addr}"),
            }
        }
    }

    #[test]
    fn a_missing_socket_is_a_connect_error_naming_the_address() {
        let addr = "unix:path=/nonexistent/cni-multi-test/bus";
        match with_bus(addr, async |_| ()) {
            Err(Error::Connect { address, reason }) => {
                assert_eq!(address, addr);
                assert!(!reason.is_empty());
            }
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("connected to {addr}"),
        }
    }
}
