// taskq dashboard: refresh every element marked data-live="URL" from that URL (an HTML fragment
// rendered by the server) every data-live-ms milliseconds, while the tab is visible.
"use strict";
(function () {
  function follow(element) {
    const url = element.dataset.live;
    const every = Number(element.dataset.liveMs || 2000);
    let busy = false;
    async function refresh() {
      if (busy || document.hidden) return;
      busy = true;
      try {
        const response = await fetch(url, { credentials: "same-origin", cache: "no-store" });
        if (response.status === 401) {
          window.location.assign("/ui/login?next=" + encodeURIComponent(location.pathname + location.search));
          return;
        }
        if (response.ok) {
          element.innerHTML = await response.text();
          element.dataset.refreshedAt = String(Date.now());
        }
        document.body.classList.toggle("stale", !response.ok);
      } catch (error) {
        // The API restarting or the network blinking: say so, and the next tick tries again.
        document.body.classList.add("stale");
      } finally {
        busy = false;
      }
    }
    setInterval(refresh, every);
  }
  document.querySelectorAll("[data-live]").forEach(follow);
})();
