// Shared by the operator pages (the gateway's status page, the relay's fleet page), served
// by both as /operator.js before the page's own script: the element helpers, the live
// badge, the token form, and where the bearer token is kept. No framework, no CDN.
"use strict";

const $ = (id) => document.getElementById(id);
const el = (tag, props = {}, ...kids) => {
  const e = Object.assign(document.createElement(tag), props);
  for (const k of kids) e.append(k);
  return e;
};

// the badge in the header: live, or why not
function live(on, text) {
  const b = $("live");
  b.textContent = text;
  b.className = "badge" + (on ? "" : " off");
}

// the token form instead of the page, with why (empty: first visit)
function showLogin(message) {
  $("main").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message || "";
  live(false, "token needed");
}

// the page again, once its API took the token
function showMain() {
  $("login").hidden = true;
  $("main").hidden = false;
}

// The bearer token, kept in localStorage under `key`: a link ending #token=... (`canopy
// demo` prints one) sets it and is dropped from the address bar (the fragment never reaches
// the server); the form sets it and calls `use`. Returns the function that reads it.
function keepToken(key, use) {
  const hash = new URLSearchParams(location.hash.slice(1));
  if (hash.get("token")) {
    localStorage.setItem(key, hash.get("token"));
    history.replaceState(null, "", location.pathname);
  }
  $("login").addEventListener("submit", (e) => {
    e.preventDefault();
    localStorage.setItem(key, $("token").value.trim());
    use();
  });
  return () => localStorage.getItem(key) || "";
}
