"""The two pages a rater sees: the sign-in form, and the side-by-side voting page with its keyboard shortcuts."""

from __future__ import annotations

import html

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; background: #fafafa; color: #222; }
#prompt { font-size: 1.2em; margin: .5em 0 1em; min-height: 1.5em; }
.videos { display: flex; gap: 1em; }
.videos figure { flex: 1; margin: 0; text-align: center; }
video { width: 100%; max-height: 60vh; background: #000; }
.buttons { margin-top: 1em; display: flex; gap: 1em; justify-content: center; }
button { font-size: 1.1em; padding: .6em 1.4em; }
#status { color: #666; margin-top: 1em; text-align: center; }
"""

SIGN_IN = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Video study</title><style>__STYLE__</style></head>
<body>
<h1>Video comparison study</h1>
<p>You will see two videos made from the same text prompt. Pick the one you prefer, or a tie.</p>
<form method="get" action="/">
  <label>Your rater id: <input id="rater" name="rater" required maxlength="64" pattern="[A-Za-z0-9_.@-]+"
    autofocus></label>
  <button id="start" type="submit">Start</button>
</form>
__ERROR__
</body></html>
"""

STUDY = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Video study</title><style>__STYLE__</style></head>
<body>
<div>Rater <b id="who">__RATER__</b> (<a href="/sign-out">not you?</a>) &middot; <span id="progress"></span></div>
<div id="prompt"></div>
<div class="videos" id="videos">
  <figure><video id="left" autoplay muted loop playsinline></video><figcaption>Left</figcaption></figure>
  <figure><video id="right" autoplay muted loop playsinline></video><figcaption>Right</figcaption></figure>
</div>
<div class="buttons" id="buttons">
  <button id="vote-left" data-choice="left">&larr; Left is better (1)</button>
  <button id="vote-tie" data-choice="tie">Tie (2 / &darr;)</button>
  <button id="vote-right" data-choice="right">Right is better (3) &rarr;</button>
</div>
<div id="status"></div>
<script>
"use strict";
let current = null, busy = false;
const $ = (id) => document.getElementById(id);
const KEYS = {ArrowLeft: "left", "1": "left", ArrowDown: "tie", "2": "tie", ArrowRight: "right", "3": "right"};

function show(state) {
  $("progress").textContent = state.progress.done + " of " + state.progress.total + " pairs rated";
  if (!state.pair) {
    current = null;
    $("videos").hidden = $("buttons").hidden = true;
    $("prompt").textContent = "";
    $("status").textContent = "All pairs rated. Thank you!";
    return;
  }
  current = state.pair;
  $("prompt").textContent = current.prompt;
  $("left").src = current.left; $("right").src = current.right;
  $("status").textContent = "";
  document.body.dataset.token = current.token;
}

async function next() {
  const response = await fetch("/api/next", {cache: "no-store"});
  if (response.status === 401) { location.href = "/"; return; }
  show(await response.json());
}

async function vote(choice) {
  if (busy || !current) return;
  busy = true;
  try {
    const response = await fetch("/api/vote", {method: "POST", headers: {"content-type": "application/json"},
      body: JSON.stringify({token: current.token, choice: choice})});
    if (!response.ok && response.status !== 409) {
      $("status").textContent = "Vote not saved (" + response.status + "); please try again.";
      return;
    }
    await next();
  } finally { busy = false; }
}

document.querySelectorAll("#buttons button").forEach((b) => b.addEventListener("click", () => vote(b.dataset.choice)));
document.addEventListener("keydown", (e) => {
  if (e.repeat || e.altKey || e.ctrlKey || e.metaKey || !(e.key in KEYS)) return;
  e.preventDefault();
  vote(KEYS[e.key]);
});
next();
</script>
</body></html>
"""


def sign_in(error: str = "") -> str:
    message = f'<p id="error">{html.escape(error)}</p>' if error else ""
    return SIGN_IN.replace("__STYLE__", _STYLE).replace("__ERROR__", message)


def study(rater: str) -> str:
    return STUDY.replace("__STYLE__", _STYLE).replace("__RATER__", html.escape(rater))
