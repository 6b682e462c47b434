//! Console login through PAM against real Unix accounts (made and removed
//! by the test) and the console's own PAM service file.

mod common;

use common::accounts::{PamService, TestAccount};
use swiftgate::web::pam::{authenticate, PamError};

#[test]
fn right_password_logs_in_wrong_one_and_unknown_user_are_denied() {
    let svc = PamService::swiftgate();
    let a = TestAccount::new();
    authenticate(&svc.name, &a.name, &a.password, Some("127.0.0.1"))
        .expect("the account's own password");

    let wrong = format!("{}x", a.password);
    let e = authenticate(&svc.name, &a.name, &wrong, None).unwrap_err();
    assert!(matches!(e, PamError::Denied), "{e:?}");
    assert_eq!(e.to_string(), "wrong user name or password");

    // An unknown user looks exactly like a wrong password: no probing.
    let ghost = format!("{}q", a.name);
    let e = authenticate(&svc.name, &ghost, &a.password, None).unwrap_err();
    assert!(matches!(e, PamError::Denied), "{e:?}");
    assert!(!e.to_string().contains(&a.password));
}

#[test]
fn a_new_password_replaces_the_old_one() {
    let svc = PamService::swiftgate();
    let mut a = TestAccount::new();
    let old = a.password.clone();
    a.set_password("An0ther-pass phrase");
    authenticate(&svc.name, &a.name, "An0ther-pass phrase", None).unwrap();
    assert!(matches!(
        authenticate(&svc.name, &a.name, &old, None),
        Err(PamError::Denied)
    ));
}

#[test]
fn an_expired_account_is_refused_after_the_right_password() {
    let svc = PamService::swiftgate();
    let a = TestAccount::new();
    let st = std::process::Command::new("chage")
        .args(["--expiredate", "1", &a.name])
        .status()
        .unwrap();
    assert!(st.success());
    let e = authenticate(&svc.name, &a.name, &a.password, None).unwrap_err();
    assert!(matches!(e, PamError::AccountRefused { .. }), "{e:?}");
    assert!(e.to_string().contains(&a.name), "{e}");
    assert!(!e.to_string().contains(&a.password), "{e}");
}

#[test]
fn the_service_file_decides() {
    // The same account through a service that denies everyone: the
    // service name given is the one PAM uses.
    let deny =
        PamService::with_text("auth requisite pam_deny.so\naccount required pam_permit.so\n");
    let a = TestAccount::new();
    assert!(matches!(
        authenticate(&deny.name, &a.name, &a.password, None),
        Err(PamError::Denied)
    ));
    let svc = PamService::swiftgate();
    authenticate(&svc.name, &a.name, &a.password, None).unwrap();
}

#[test]
fn test_accounts_and_their_groups_are_removed_even_when_a_test_fails() {
    let exists = |db: &str, name: &str| {
        std::process::Command::new("getent")
            .args([db, name])
            .output()
            .unwrap()
            .status
            .success()
    };
    let names = std::sync::Mutex::new(None);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let a = TestAccount::in_new_group();
        let g = a.group().unwrap().to_string();
        *names.lock().unwrap() = Some((a.name.clone(), g.clone()));
        let groups = nix::unistd::getgrouplist(
            &std::ffi::CString::new(a.name.clone()).unwrap(),
            nix::unistd::Gid::from_raw(100),
        )
        .unwrap();
        let gid = nix::unistd::Group::from_name(&g).unwrap().unwrap().gid;
        assert!(groups.contains(&gid), "{} not in {g}", a.name);
        panic!("the test fails here");
    }));
    assert!(r.is_err());
    let (user, group) = names.lock().unwrap().take().unwrap();
    assert!(!exists("passwd", &user), "{user} left behind");
    assert!(!exists("group", &group), "{group} left behind");
}
