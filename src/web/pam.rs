//! Console login through PAM: the system's own accounts and policy
//! (`/etc/pam.d/swiftgate`, a copy of `provisioning/pam.d/swiftgate`).
//!
//! The conversation is ours, not the `pam` crate's: it answers PAM's
//! prompts from memory that is zeroized afterwards (every copy handed to
//! PAM is wiped before it is freed when PAM gives it back on error, and
//! Linux-PAM's modules wipe the ones they keep). No process is spawned and
//! the password never reaches argv, a log or an error message.
//!
//! Blocking (a failed attempt takes about two seconds: pam_unix's
//! fail delay): call it from `tokio::task::spawn_blocking`.

use std::ffi::{CStr, CString};
use std::os::raw::{c_char, c_int, c_void};
use std::ptr;

use pam_sys::raw;
use pam_sys::{PamConversation, PamHandle, PamItemType, PamMessage, PamResponse, PamReturnCode};
use zeroize::{Zeroize, Zeroizing};

/// The PAM service the console authenticates against by default.
pub const DEFAULT_SERVICE: &str = "swiftgate";

/// Why a login was refused. `Denied` covers both an unknown user and a
/// wrong password, so a login page cannot be used to probe for accounts.
#[derive(Debug, thiserror::Error)]
pub enum PamError {
    #[error("the {0} contains a NUL byte, which PAM cannot take; type it again without it")]
    Nul(&'static str),
    #[error("wrong user name or password")]
    Denied,
    #[error(
        "account {user:?} may not log in now ({reason}); an administrator must \
         unlock it or renew its password"
    )]
    AccountRefused { user: String, reason: String },
    #[error(
        "PAM service {service:?} failed: {reason}; check /etc/pam.d/{service} \
         (a copy of provisioning/pam.d/swiftgate) and the system log"
    )]
    Service { service: String, reason: String },
}

/// Checks `user`'s `password` with PAM service `service` (authentication,
/// then account management: expired or locked accounts are refused).
/// `rhost` is the client's address, for PAM modules that log or rate
/// limit by it. Empty passwords are refused before PAM is asked (Debian's
/// common-auth says `nullok`).
pub fn authenticate(
    service: &str,
    user: &str,
    password: &str,
    rhost: Option<&str>,
) -> Result<(), PamError> {
    let service_c = CString::new(service).map_err(|_| PamError::Nul("PAM service name"))?;
    let user_c = CString::new(user).map_err(|_| PamError::Nul("user name"))?;
    let rhost_c = rhost
        .map(CString::new)
        .transpose()
        .map_err(|_| PamError::Nul("client address"))?;
    if password.is_empty() || user.is_empty() {
        return Err(PamError::Denied);
    }
    if password.as_bytes().contains(&0) {
        return Err(PamError::Nul("password"));
    }
    // Boxed: PAM keeps a pointer to it for the whole transaction.
    let answers = Box::new(Answers {
        user: user_c.as_bytes().to_vec(),
        password: Zeroizing::new(password.as_bytes().to_vec()),
    });
    let conv = PamConversation {
        conv: Some(converse),
        data_ptr: &*answers as *const Answers as *mut c_void,
    };
    let service_err = |reason: String| PamError::Service {
        service: service.to_string(),
        reason,
    };

    let mut handle: *const PamHandle = ptr::null();
    // SAFETY: all pointers are valid C strings / structs that outlive the
    // transaction (`answers` and `conv` live until the end of this function,
    // after `Transaction::drop` has called pam_end).
    let rc = unsafe { raw::pam_start(service_c.as_ptr(), user_c.as_ptr(), &conv, &mut handle) };
    if rc != PamReturnCode::SUCCESS as c_int || handle.is_null() {
        return Err(service_err(format!("pam_start returned {rc}")));
    }
    let mut t = Transaction {
        handle: handle as *mut PamHandle,
        status: rc,
    };
    if let Some(rhost) = &rhost_c {
        // SAFETY: PAM copies the string.
        let rc = unsafe {
            raw::pam_set_item(
                t.handle,
                PamItemType::RHOST as c_int,
                rhost.as_ptr() as *const c_void,
            )
        };
        if rc != PamReturnCode::SUCCESS as c_int {
            return Err(service_err(t.fail(rc, "pam_set_item(PAM_RHOST)")));
        }
    }

    // SAFETY: a live handle from pam_start.
    let rc = unsafe { raw::pam_authenticate(t.handle, PAM_DISALLOW_NULL_AUTHTOK) };
    match code(rc) {
        Some(PamReturnCode::SUCCESS) => {}
        Some(
            PamReturnCode::AUTH_ERR
            | PamReturnCode::USER_UNKNOWN
            | PamReturnCode::CRED_INSUFFICIENT
            | PamReturnCode::MAXTRIES
            | PamReturnCode::PERM_DENIED,
        ) => {
            t.status = rc;
            return Err(PamError::Denied);
        }
        _ => return Err(service_err(t.fail(rc, "pam_authenticate"))),
    }

    // SAFETY: as above.
    let rc = unsafe { raw::pam_acct_mgmt(t.handle, PAM_DISALLOW_NULL_AUTHTOK) };
    match code(rc) {
        Some(PamReturnCode::SUCCESS) => {
            t.status = rc;
            Ok(())
        }
        Some(PamReturnCode::USER_UNKNOWN) => {
            t.status = rc;
            Err(PamError::Denied)
        }
        Some(
            PamReturnCode::ACCT_EXPIRED
            | PamReturnCode::NEW_AUTHTOK_REQD
            | PamReturnCode::PERM_DENIED
            | PamReturnCode::AUTH_ERR,
        ) => Err(PamError::AccountRefused {
            user: user.to_string(),
            reason: t.fail(rc, "account"),
        }),
        _ => Err(service_err(t.fail(rc, "pam_acct_mgmt"))),
    }
}

// From <security/_pam_types.h>.
const PAM_DISALLOW_NULL_AUTHTOK: c_int = 0x0001;
const PAM_PROMPT_ECHO_OFF: c_int = 1;
const PAM_PROMPT_ECHO_ON: c_int = 2;
const PAM_ERROR_MSG: c_int = 3;
const PAM_TEXT_INFO: c_int = 4;
/// More prompts than any real module stack sends in one call: a bound on
/// what we allocate for a confused one.
const MAX_MESSAGES: c_int = 32;

/// What the conversation answers: the user name to visible prompts, the
/// password to hidden ones.
struct Answers {
    user: Vec<u8>,
    password: Zeroizing<Vec<u8>>,
}

/// One PAM transaction; ends it (pam_end) on every path.
struct Transaction {
    handle: *mut PamHandle,
    status: c_int,
}

impl Transaction {
    /// Records a failure and describes it in PAM's words.
    fn fail(&mut self, rc: c_int, what: &str) -> String {
        self.status = rc;
        // SAFETY: a live handle; pam_strerror returns a static string.
        let msg = unsafe { raw::pam_strerror(self.handle, rc) };
        let text = if msg.is_null() {
            "unknown error".to_string()
        } else {
            unsafe { CStr::from_ptr(msg) }
                .to_string_lossy()
                .into_owned()
        };
        format!("{what}: {text} (code {rc})")
    }
}

impl Drop for Transaction {
    fn drop(&mut self) {
        // SAFETY: the handle came from a successful pam_start and is ended
        // exactly once.
        unsafe {
            raw::pam_end(self.handle, self.status);
        }
    }
}

fn code(rc: c_int) -> Option<PamReturnCode> {
    use PamReturnCode::*;
    [
        SUCCESS,
        PERM_DENIED,
        AUTH_ERR,
        CRED_INSUFFICIENT,
        USER_UNKNOWN,
        MAXTRIES,
        NEW_AUTHTOK_REQD,
        ACCT_EXPIRED,
    ]
    .into_iter()
    .find(|c| *c as c_int == rc)
}

/// PAM's conversation callback. Must not panic (it is called from C):
/// nothing in it can.
extern "C" fn converse(
    num_msg: c_int,
    msg: *mut *mut PamMessage,
    out: *mut *mut PamResponse,
    appdata: *mut c_void,
) -> c_int {
    if num_msg <= 0 || num_msg > MAX_MESSAGES || msg.is_null() || out.is_null() {
        return PamReturnCode::CONV_ERR as c_int;
    }
    if appdata.is_null() {
        return PamReturnCode::CONV_ERR as c_int;
    }
    // SAFETY: data_ptr is the `Answers` authenticate() keeps alive.
    let answers = unsafe { &*(appdata as *const Answers) };
    let n = num_msg as usize;
    // PAM frees the array and each answer with free(): allocate with calloc.
    let resp = unsafe { libc::calloc(n, std::mem::size_of::<PamResponse>()) } as *mut PamResponse;
    if resp.is_null() {
        return PamReturnCode::BUF_ERR as c_int;
    }
    for i in 0..n {
        // SAFETY: Linux-PAM passes an array of `num_msg` message pointers.
        let m = unsafe { *msg.add(i) };
        if m.is_null() {
            free_responses(resp, n);
            return PamReturnCode::CONV_ERR as c_int;
        }
        let (style, text) = unsafe { ((*m).msg_style, (*m).msg) };
        let answer: Option<&[u8]> = match style {
            PAM_PROMPT_ECHO_OFF => Some(&answers.password),
            PAM_PROMPT_ECHO_ON => Some(&answers.user),
            PAM_ERROR_MSG | PAM_TEXT_INFO => {
                if !text.is_null() {
                    let t = unsafe { CStr::from_ptr(text) }.to_string_lossy();
                    tracing::debug!(message = %t, "PAM says");
                }
                None
            }
            _ => {
                free_responses(resp, n);
                return PamReturnCode::CONV_ERR as c_int;
            }
        };
        if let Some(a) = answer {
            let p = unsafe { libc::calloc(a.len() + 1, 1) } as *mut u8;
            if p.is_null() {
                free_responses(resp, n);
                return PamReturnCode::BUF_ERR as c_int;
            }
            // SAFETY: p has a.len() + 1 zeroed bytes (the last one the NUL).
            unsafe {
                ptr::copy_nonoverlapping(a.as_ptr(), p, a.len());
                (*resp.add(i)).resp = p as *mut c_char;
            }
        }
    }
    // SAFETY: `out` checked non-null; PAM owns the array from here on.
    unsafe { *out = resp };
    PamReturnCode::SUCCESS as c_int
}

/// Wipes and frees a response array that never reaches PAM.
fn free_responses(resp: *mut PamResponse, n: usize) {
    for i in 0..n {
        // SAFETY: `resp` has n entries, each null or a calloc'd C string.
        unsafe {
            let r = (*resp.add(i)).resp;
            if !r.is_null() {
                let len = libc::strlen(r);
                std::slice::from_raw_parts_mut(r as *mut u8, len).zeroize();
                libc::free(r as *mut c_void);
            }
        }
    }
    unsafe { libc::free(resp as *mut c_void) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_bytes_and_empty_passwords_are_refused_before_pam() {
        assert!(matches!(
            authenticate("swiftgate", "a\0b", "x", None),
            Err(PamError::Nul("user name"))
        ));
        assert!(matches!(
            authenticate("swiftgate", "root", "x\0y", None),
            Err(PamError::Nul("password"))
        ));
        assert!(matches!(
            authenticate("swiftgate", "root", "", None),
            Err(PamError::Denied)
        ));
        assert!(matches!(
            authenticate("swiftgate", "", "x", None),
            Err(PamError::Denied)
        ));
    }

    #[test]
    fn the_conversation_answers_user_and_password_and_refuses_unknown_styles() {
        let answers = Answers {
            user: b"alice".to_vec(),
            password: Zeroizing::new(b"s3cret".to_vec()),
        };
        let p1 = CString::new("Password: ").unwrap();
        let p2 = CString::new("login: ").unwrap();
        let mut m1 = PamMessage {
            msg_style: PAM_PROMPT_ECHO_OFF,
            msg: p1.as_ptr(),
        };
        let mut m2 = PamMessage {
            msg_style: PAM_PROMPT_ECHO_ON,
            msg: p2.as_ptr(),
        };
        let mut msgs = [&mut m1 as *mut PamMessage, &mut m2 as *mut PamMessage];
        let mut out: *mut PamResponse = ptr::null_mut();
        let data = &answers as *const Answers as *mut c_void;
        let rc = converse(2, msgs.as_mut_ptr(), &mut out, data);
        assert_eq!(rc, PamReturnCode::SUCCESS as c_int);
        let got = |i: usize| unsafe { CStr::from_ptr((*out.add(i)).resp) }.to_owned();
        assert_eq!(got(0).as_bytes(), b"s3cret");
        assert_eq!(got(1).as_bytes(), b"alice");
        free_responses(out, 2);

        // Through the pointer PAM would use (m1 itself is borrowed by it).
        unsafe { (*msgs[0]).msg_style = 99 };
        let mut out2: *mut PamResponse = ptr::null_mut();
        let rc = converse(2, msgs.as_mut_ptr(), &mut out2, data);
        assert_eq!(rc, PamReturnCode::CONV_ERR as c_int);
        assert!(out2.is_null());
    }
}
