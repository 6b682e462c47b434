//! The router, built through a table: every route is recorded with its
//! method and whether it is public, so tests (and the OpenAPI check)
//! enumerate the real routes rather than a list kept by hand.

use super::AppState;
use axum::handler::Handler;
use axum::routing::{delete, get, post, put, MethodRouter};
use axum::Router;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteInfo {
    pub method: &'static str,
    /// axum syntax: `/users/{name}`.
    pub path: &'static str,
    pub public: bool,
}

pub struct Routes {
    pub router: Router<AppState>,
    pub table: Vec<RouteInfo>,
    public: bool,
}

impl Routes {
    pub fn public() -> Routes {
        Routes {
            router: Router::new(),
            table: Vec::new(),
            public: true,
        }
    }
    pub fn protected() -> Routes {
        Routes {
            public: false,
            ..Routes::public()
        }
    }

    fn add(mut self, method: &'static str, path: &'static str, mr: MethodRouter<AppState>) -> Self {
        self.table.push(RouteInfo {
            method,
            path,
            public: self.public,
        });
        self.router = self.router.route(path, mr);
        self
    }

    pub fn get<H: Handler<T, AppState>, T: 'static>(self, path: &'static str, h: H) -> Self {
        self.add("GET", path, get(h))
    }
    pub fn post<H: Handler<T, AppState>, T: 'static>(self, path: &'static str, h: H) -> Self {
        self.add("POST", path, post(h))
    }
    pub fn put<H: Handler<T, AppState>, T: 'static>(self, path: &'static str, h: H) -> Self {
        self.add("PUT", path, put(h))
    }
    pub fn delete<H: Handler<T, AppState>, T: 'static>(self, path: &'static str, h: H) -> Self {
        self.add("DELETE", path, delete(h))
    }

    pub fn merge(mut self, other: Routes) -> Self {
        assert_eq!(
            self.public, other.public,
            "public and protected routes mixed"
        );
        self.table.extend(other.table);
        self.router = self.router.merge(other.router);
        self
    }
}
