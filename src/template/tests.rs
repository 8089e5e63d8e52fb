//! Template parsing and rendering.
use super::*;

fn env(name: &str) -> Option<String> {
    match name {
        "SET" => Some("value".into()),
        "EMPTY" => Some(String::new()),
        _ => None,
    }
}

struct Tok;
impl TokenView for Tok {
    fn access_token(&self) -> &str {
        "abc"
    }
    fn token_type(&self) -> &str {
        "Bearer"
    }
    fn id_token(&self) -> Option<&str> {
        None
    }
    fn claim(&self, path: &[String]) -> Option<String> {
        (path.join(".") == "org.id").then(|| "42".into())
    }
}

#[test]
fn parses_literals_and_placeholders_once() {
    let t = Template::parse("Bearer <<oauth.token>>", Context::Header, &env).unwrap();
    assert_eq!(
        t.segments,
        vec![Segment::Lit("Bearer ".into()), Segment::Token]
    );
    assert_eq!(t.render_header(Some(&Tok)).unwrap(), "Bearer abc");
    let t = Template::parse("<<oauth.tokenType>> <<oauth.token>>", Context::Header, &env).unwrap();
    assert_eq!(t.render_header(Some(&Tok)).unwrap(), "Bearer abc");
}

#[test]
fn env_is_resolved_at_load() {
    let t = Template::parse("x-<<env.SET>>-y", Context::Header, &env).unwrap();
    assert_eq!(t.as_literal(), Some("x-value-y"));
    let t = Template::parse("<<env.NOPE:-fallback>>", Context::ClientField, &env).unwrap();
    assert_eq!(t.as_literal(), Some("fallback"));
    let t = Template::parse("<<env.EMPTY:-fallback>>", Context::ClientField, &env).unwrap();
    assert_eq!(t.as_literal(), Some("fallback"));
    let t = Template::parse("<<env.NOPE:->>", Context::ClientField, &env).unwrap();
    assert_eq!(t.as_literal(), Some(""));
    assert_eq!(
        Template::parse("<<env.NOPE>>", Context::Header, &env),
        Err(TemplateError::MissingEnv("NOPE".into()))
    );
}

#[test]
fn rejects_unknown_and_misplaced_placeholders() {
    for (src, ctx) in [
        ("<<oauth.nope>>", Context::Header),
        ("<<nope>>", Context::Header),
        ("<<oauth.tokenDecoded.>>", Context::Header),
        ("<<client.nope>>", Context::Body),
    ] {
        assert!(
            matches!(
                Template::parse(src, ctx, &env),
                Err(TemplateError::Unknown(_))
            ),
            "{src}"
        );
    }
    assert!(matches!(
        Template::parse("<<oauth.token>>", Context::ClientField, &env),
        Err(TemplateError::NotAllowed(..))
    ));
    assert!(matches!(
        Template::parse("<<file:/x>>", Context::Header, &env),
        Err(TemplateError::NotAllowed(..))
    ));
    assert_eq!(
        Template::parse("a <<oauth.token", Context::Header, &env),
        Err(TemplateError::Unterminated)
    );
}

#[test]
fn claims_and_missing_values() {
    let t = Template::parse("<<oauth.tokenDecoded.org.id>>", Context::Header, &env).unwrap();
    assert_eq!(t.render_header(Some(&Tok)).unwrap(), "42");
    let t = Template::parse("<<oauth.idToken>>", Context::Header, &env).unwrap();
    assert_eq!(
        t.render_header(Some(&Tok)),
        Err(RenderError::IdTokenMissing)
    );
}

#[test]
fn files_are_reread_on_every_render() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secret");
    std::fs::write(&path, "one\n").unwrap();
    let src = format!("<<file:{}>>", path.display());
    let t = Template::parse(&src, Context::ClientField, &env).unwrap();
    assert_eq!(t.render_value(&|_| None).unwrap().expose(), "one");
    std::fs::write(&path, "two\r\n").unwrap();
    assert_eq!(t.render_value(&|_| None).unwrap().expose(), "two");
}

#[test]
fn debug_never_shows_literal_values() {
    let t = Template::parse("secret-<<env.SET>>-<<oauth.token>>", Context::Header, &env).unwrap();
    let shown = format!("{t:?}");
    assert!(
        !shown.contains("secret") && !shown.contains("value"),
        "{shown}"
    );
    assert!(shown.contains("Token"), "{shown}");
}
