//! Registry access the way real registries demand it: the bearer-token challenge flow with
//! basic credentials, identity (refresh) tokens and registry tokens from `AuthConfig`, and
//! TLS registries that are trusted only when named insecure.

mod common;

use common::*;
use skiff_integration::image::Compression;
use skiff_integration::registry::{Auth, Options};
use skiff_integration::token::TokenServer;
use skiff_integration::{require_root, ImageBuilder, Layer, Registry, Skiffd};
use skiff_proto::cri::{AuthConfig, RemoveImageRequest};
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_token_flow_with_password_identity_and_registry_tokens() {
    require_root();
    let open = Registry::start();
    let img = ImageBuilder::new()
        .layer(Layer::busybox(), Compression::Gzip)
        .push(&open.host, "private/tokened", "v1")
        .await;
    let tokens = TokenServer::start("bob", "hunter2", "refresh-123").await;
    let reg = Registry::start_opts(Options {
        auth: Auth::Token(&tokens),
        share: Some(&open),
        ..Default::default()
    });
    let reference = format!("{}/private/tokened:v1", reg.host);
    let d = Skiffd::start(&[&reg.host]);
    let mut c = d.images().await;
    let remove = |c: &mut skiff_proto::cri::image_service_client::ImageServiceClient<_>| {
        let mut c = c.clone();
        let id = img.id().to_string();
        async move {
            c.remove_image(RemoveImageRequest { image: spec(&id) })
                .await
                .unwrap();
        }
    };

    let e = pull(&mut c, &reference, None).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "anonymous: {e:?}");
    let e = pull(
        &mut c,
        &reference,
        Some(AuthConfig {
            username: "bob".into(),
            password: "wrong".into(),
            ..Default::default()
        }),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "wrong password: {e:?}");

    // Username and password: the registry's challenge sends skiff to the token server.
    let id = pull(
        &mut c,
        &reference,
        Some(AuthConfig {
            username: "bob".into(),
            password: "hunter2".into(),
            ..Default::default()
        }),
    )
    .await
    .expect("pull with password through the token server");
    assert_eq!(id, img.id());
    remove(&mut c).await;

    // An identity token is traded for an access token (OAuth2 refresh_token grant).
    let id = pull(
        &mut c,
        &reference,
        Some(AuthConfig {
            identity_token: "refresh-123".into(),
            ..Default::default()
        }),
    )
    .await
    .expect("pull with identity token");
    assert_eq!(id, img.id());
    remove(&mut c).await;
    let e = pull(
        &mut c,
        &reference,
        Some(AuthConfig {
            identity_token: "stolen".into(),
            ..Default::default()
        }),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    assert!(e.message().contains("identity token"), "{}", e.message());

    // A registry token is sent as it is.
    let token: serde_json::Value = reqwest::Client::new()
        .get(format!(
            "{}?service={}&scope=repository:private/tokened:pull",
            tokens.realm,
            skiff_integration::token::SERVICE
        ))
        .basic_auth("bob", Some("hunter2"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = pull(
        &mut c,
        &reference,
        Some(AuthConfig {
            registry_token: token["token"].as_str().unwrap().into(),
            ..Default::default()
        }),
    )
    .await
    .expect("pull with registry token");
    assert_eq!(id, img.id());
    remove(&mut c).await;
    let e = pull(
        &mut c,
        &reference,
        Some(AuthConfig {
            registry_token: "not-a-token".into(),
            ..Default::default()
        }),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_registry_is_trusted_only_when_insecure() {
    require_root();
    let open = Registry::start();
    let img = ImageBuilder::new()
        .layer(Layer::busybox(), Compression::Gzip)
        .push(&open.host, "tls/app", "v1")
        .await;
    let tls = Registry::start_opts(Options {
        tls: true,
        share: Some(&open),
        ..Default::default()
    });
    let reference = format!("{}/tls/app:v1", tls.host);

    let strict = Skiffd::start(&[]);
    let e = pull(&mut strict.images().await, &reference, None)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(
        e.message().to_lowercase().contains("certificate"),
        "{}",
        e.message()
    );

    let trusting = Skiffd::start(&[&tls.host]);
    let id = pull(&mut trusting.images().await, &reference, None)
        .await
        .expect("pull over unverified TLS");
    assert_eq!(id, img.id());
}
