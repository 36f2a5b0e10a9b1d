// The demo page: the centrifuge SDK connects to the gateway that served the
// page, subscribes to one channel and lists its publications. A token and a
// channel may come in the fragment (#token=…&channel=…), which no server sees.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const wsURL = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/connection/websocket";
  let client = null;

  function setPill(id, text, ok) {
    $(id).textContent = text;
    $(id).classList.toggle("ok", ok);
  }

  function showError(text) {
    $("error").hidden = text === "";
    $("error").textContent = text;
  }

  function publishHint(channel) {
    const body = JSON.stringify({ channel: channel, data: { text: "hello" } });
    $("publish-hint").textContent = "curl -X POST -H \"X-API-Key: KEY\" --data '" + body + "' \\\n     " +
      location.origin + "/api/publish";
  }

  function addPublication(channel, data) {
    const li = document.createElement("li");
    li.dataset.channel = channel;
    li.textContent = JSON.stringify(data);
    $("publications").append(li);
    $("count").textContent = String($("publications").children.length);
  }

  function disconnect() {
    if (client) {
      client.disconnect();
      client = null;
    }
    setPill("state", "disconnected", false);
    setPill("sub-state", "not subscribed", false);
    $("connect-button").disabled = false;
    $("disconnect-button").disabled = true;
  }

  function connect(token, channel) {
    disconnect();
    showError("");
    publishHint(channel);
    client = new Centrifuge(wsURL, { token: token });
    client.on("connecting", (ctx) => setPill("state", "connecting (" + ctx.reason + ")", false));
    client.on("connected", (ctx) => setPill("state", "connected as " + ctx.client, true));
    client.on("disconnected", (ctx) => {
      setPill("state", "disconnected (" + ctx.reason + ")", false);
      showError("disconnected: " + ctx.code + " " + ctx.reason);
    });
    client.on("error", (ctx) => showError("connection error: " + (ctx.error && ctx.error.message)));
    const sub = client.newSubscription(channel);
    sub.on("subscribing", () => setPill("sub-state", "subscribing to " + channel, false));
    sub.on("subscribed", () => setPill("sub-state", "subscribed to " + channel, true));
    sub.on("unsubscribed", (ctx) => setPill("sub-state", "unsubscribed (" + ctx.reason + ")", false));
    sub.on("error", (ctx) => showError("subscription error: " + (ctx.error && ctx.error.message)));
    sub.on("publication", (ctx) => addPublication(channel, ctx.data));
    sub.subscribe();
    client.connect();
    $("connect-button").disabled = true;
    $("disconnect-button").disabled = false;
  }

  $("connect-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const token = $("token").value.trim();
    const channel = $("channel").value.trim() || "news";
    if (token === "") {
      showError("paste a connection token first: spindle token --user 42 --secret SECRET");
      return;
    }
    connect(token, channel);
  });
  $("disconnect-button").addEventListener("click", disconnect);

  const params = new URLSearchParams(location.hash.slice(1));
  if (params.get("channel")) {
    $("channel").value = params.get("channel");
  }
  publishHint($("channel").value);
  if (params.get("token")) {
    $("token").value = params.get("token");
    // keep the token out of the history and of a copied address
    history.replaceState(null, "", location.pathname);
    connect($("token").value, $("channel").value);
  }
})();
