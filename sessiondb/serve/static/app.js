// sessiondb serve: loading more of a transcript, the live tail, and the health page's refresh.
// The only script the pages load (the Content-Security-Policy allows no other): HTML it inserts
// comes from the server, rendered by the same escaping templates as the page itself.
"use strict";

(function () {
  function fromHtml(html) {
    var t = document.createElement("template");
    t.innerHTML = html;
    return t.content;
  }

  function lastShown(list) {
    var all = list.querySelectorAll("article.msg");
    return all.length ? parseInt(all[all.length - 1].dataset.seq, 10) : null;
  }

  // A tool result that arrives live is shown inside its call too, as the server pairs them in
  // a page it renders (sessiondb/serve/transcript.py).
  function pairLive(msg) {
    if (!msg) return;
    var results = msg.querySelectorAll("details.tool-result[data-call-id]");
    for (var i = 0; i < results.length; i++) {
      var id = results[i].dataset.callId;
      var call = document.querySelector("details.tool-call[data-call-id=\"" + CSS.escape(id) + "\"]");
      if (!call || call.querySelector(".tool-result-text")) continue;
      var isError = results[i].classList.contains("is-error");
      var label = document.createElement("div");
      label.className = "label";
      label.textContent = isError ? "result (error)" : "result";
      var pre = document.createElement("pre");
      pre.className = "tool-result-text" + (isError ? " is-error" : "");
      pre.textContent = results[i].querySelector("pre").textContent;
      call.appendChild(label);
      call.appendChild(pre);
      var note = call.querySelector("summary .unpaired");
      if (note) {
        note.className = "paired" + (isError ? " is-error" : "");
        note.textContent = (isError ? "→ error in #" : "→ result in #") + msg.dataset.seq;
      }
    }
  }

  function setupTranscript(list) {
    var more = document.querySelector("a.more");
    var newest = document.querySelector("a.newest");
    var live = document.getElementById("live");
    var source = null;
    var last = parseInt(list.querySelector(".page").dataset.last, 10);

    function append(page) {
      var holder = page.querySelector(".page");
      var before = lastShown(list);
      var fresh = holder ? holder.querySelectorAll("article.msg") : [];
      for (var i = 0; i < fresh.length; i++) {
        var seq = parseInt(fresh[i].dataset.seq, 10);
        if (before === null || seq > before) { list.appendChild(fresh[i]); before = seq; }
      }
      last = before === null ? last : before;
      return holder;
    }

    function loadMore(ev) {
      ev.preventDefault();
      var url = more.getAttribute("href").replace(/^\/s\/([^/?]+)\?/, "/s/$1/fragment?");
      fetch(url, { credentials: "same-origin" }).then(function (r) { return r.text(); })
        .then(function (html) {
          var holder = append(fromHtml(html));
          if (holder && holder.dataset.later) {
            more.setAttribute("href", holder.dataset.later.replace("/fragment?", "?"));
          } else {
            more.remove();
            if (newest) newest.remove();
            startTail();
          }
        });
    }

    function startTail() {
      if (source) return;
      var url = list.dataset.events.replace(/after=\d+/, "after=" + last);
      source = new EventSource(url);
      if (live) live.hidden = false;
      source.addEventListener("message", function (ev) {
        var data = JSON.parse(ev.data);
        var shown = lastShown(list);
        if (shown !== null && data.seq <= shown) { // never twice (counted: the tests expect none)
          list.dataset.duplicates = String(parseInt(list.dataset.duplicates || "0", 10) + 1);
          return;
        }
        list.appendChild(fromHtml(data.html));
        last = data.seq;
        pairLive(list.querySelector("#m" + data.seq));
      });
      source.addEventListener("revision", function (ev) {
        // A message was removed (pop_message): seqs after the new count are gone and a seq may
        // be taken again; reload what is shown from the first message of the window.
        source.close();
        source = null;
        var data = JSON.parse(ev.data);
        var first = parseInt(list.dataset.first, 10);
        var frag = list.dataset.fragment + "?after=" + first;
        fetch(frag, { credentials: "same-origin" }).then(function (r) { return r.text(); })
          .then(function (html) {
            var msgs = list.querySelectorAll("article.msg");
            for (var i = 0; i < msgs.length; i++) msgs[i].remove();
            var old = list.querySelector(".page");
            if (old) old.remove();
            append(fromHtml(html));
            if (last > data.count) last = data.count;
            list.dataset.events = list.dataset.events.replace(/rev=\d+/, "rev=" + data.revision);
            startTail();
          });
      });
      source.addEventListener("gone", function () {
        source.close();
        if (live) live.textContent = "this session was deleted";
      });
    }

    if (more) more.addEventListener("click", loadMore);
    if (list.querySelector(".page").dataset.atEnd === "1") startTail();
  }

  function setupHealth(box) {
    if (box.dataset.pending === "1") {
      setTimeout(function () { location.reload(); }, 700);
    }
  }

  document.addEventListener("DOMContentLoaded", function () {
    var list = document.getElementById("transcript");
    if (list) setupTranscript(list);
    var health = document.getElementById("health");
    if (health) setupHealth(health);
  });
})();
