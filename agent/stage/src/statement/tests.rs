use super::*;

const NOW_MS: u64 = 1_800_000_000_000;

fn key(seed: u8) -> SecretKey {
    SecretKey::from_seed([seed; 32])
}

fn trusted(k: &SecretKey) -> TrustedKeys {
    let mut t = TrustedKeys::new();
    t.add(k.public());
    t
}

const CLUSTER: [u8; 8] = [0xc1; 8];

fn statement(action: Action) -> Statement {
    Statement {
        cluster: CLUSTER,
        epoch: 3,
        action,
        counter: NOW_MS,
        expires_at: NOW_MS / 1000 + 3600,
        reason: "link flaps on rack 12".into(),
    }
}

#[test]
fn round_trip_and_check() {
    let k = key(1);
    let s = statement(Action::Abort).sign(&k).unwrap();
    let line = s.to_line();
    assert!(
        line.starts_with("entente-control-v1 c1c1c1c1c1c1c1c1 3 abort 1800000000000 1800003600 ")
    );
    let back = SignedStatement::parse(&line).unwrap();
    assert_eq!(back, s);
    assert_eq!(back.check(&CLUSTER, &trusted(&k), NOW_MS, 0), Ok(()));
    let empty = Statement {
        reason: String::new(),
        ..statement(Action::Pause)
    };
    let e = empty.sign(&k).unwrap();
    assert_eq!(SignedStatement::parse(&e.to_line()).unwrap(), e);
}

#[test]
fn forged_and_unknown_keys_are_refused() {
    let k = key(1);
    let s = statement(Action::Abort).sign(&k).unwrap();
    let stranger = statement(Action::Abort).sign(&key(2)).unwrap();
    assert!(matches!(
        stranger.check(&CLUSTER, &trusted(&k), NOW_MS, 0),
        Err(StatementError::UnknownKey(_))
    ));
    // the action changed after signing
    let line = s.to_line().replace(" abort ", " resume ");
    let altered = SignedStatement::parse(&line).unwrap();
    assert!(matches!(
        altered.check(&CLUSTER, &trusted(&k), NOW_MS, 0),
        Err(StatementError::BadSignature(_))
    ));
    // the reason changed after signing
    let line = s.to_line().replace("rack 12", "rack 13");
    let altered = SignedStatement::parse(&line).unwrap();
    assert!(matches!(
        altered.check(&CLUSTER, &trusted(&k), NOW_MS, 0),
        Err(StatementError::BadSignature(_))
    ));
}

#[test]
fn another_clusters_statement_is_refused() {
    let k = key(1);
    let s = statement(Action::Abort).sign(&k).unwrap();
    assert!(matches!(
        s.check(&[0xc2; 8], &trusted(&k), NOW_MS, 0),
        Err(StatementError::OtherCluster { .. })
    ));
    // the cluster changed after signing
    let line = s
        .to_line()
        .replacen("c1c1c1c1c1c1c1c1", "c2c2c2c2c2c2c2c2", 1);
    let moved = SignedStatement::parse(&line).unwrap();
    assert!(matches!(
        moved.check(&[0xc2; 8], &trusted(&k), NOW_MS, 0),
        Err(StatementError::BadSignature(_))
    ));
}

#[test]
fn time_rules() {
    let k = key(1);
    let t = trusted(&k);
    let s = statement(Action::Pause).sign(&k).unwrap();
    let expired = NOW_MS + 3600 * 1000;
    assert!(matches!(
        s.check(&CLUSTER, &t, expired, 0),
        Err(StatementError::Expired { .. })
    ));
    assert!(matches!(
        s.check(&CLUSTER, &t, NOW_MS, NOW_MS),
        Err(StatementError::Repeat { .. })
    ));
    // signed with u64::MAX as its counter, to outrank every later statement
    let far = Statement {
        counter: u64::MAX,
        expires_at: u64::MAX,
        ..statement(Action::Abort)
    }
    .sign(&k)
    .unwrap();
    assert!(matches!(
        far.check(&CLUSTER, &t, NOW_MS, 0),
        Err(StatementError::FarAhead { .. })
    ));
    // a clock a few minutes behind the signer's is fine
    assert_eq!(s.check(&CLUSTER, &t, NOW_MS - 5 * 60 * 1000, 0), Ok(()));
    let long = Statement {
        expires_at: NOW_MS / 1000 + MAX_VALIDITY_S + 1,
        ..statement(Action::Pause)
    }
    .sign(&k)
    .unwrap();
    assert!(matches!(
        long.check(&CLUSTER, &t, NOW_MS, 0),
        Err(StatementError::TooLong(_))
    ));
}

#[test]
fn malformed_lines_are_refused() {
    let k = key(1);
    let good = statement(Action::Resume).sign(&k).unwrap().to_line();
    let cases = [
        String::new(),
        "entente-control-v1".into(),
        good.replacen("entente-control-v1", "entente-control-v2", 1),
        good.replacen(" 3 ", " 03 ", 1),
        good.replacen(" resume ", " halt ", 1),
        good.replacen(" resume ", "  resume ", 1),
        format!("{good}\n"),
        format!("{good}{}", "x".repeat(MAX_REASON_LEN)),
        "x".repeat(MAX_STATEMENT_LEN + 1),
        good.replacen(" 1800000000000 ", " 99999999999999999999999 ", 1),
    ];
    for line in cases {
        assert!(
            matches!(
                SignedStatement::parse(&line),
                Err(StatementError::Malformed(_))
            ),
            "{line:?}"
        );
    }
    let bad_reason = Statement {
        reason: "two\nlines".into(),
        ..statement(Action::Pause)
    };
    assert!(bad_reason.sign(&k).is_err());
}
