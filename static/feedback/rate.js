// Keyboard shortcuts for the rating page: u / d rate, n skips, c opens the compare view.
(function () {
  "use strict";
  document.addEventListener("keydown", function (event) {
    var target = event.target;
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (target && (target.tagName === "INPUT" || target.tagName === "TEXTAREA" || target.tagName === "SELECT")) return;
    var clicks = { u: "thumbs-up", d: "thumbs-down", n: "skip", c: "compare-link" };
    var id = clicks[event.key];
    var element = id && document.getElementById(id);
    if (element) {
      event.preventDefault();
      element.click();
    }
  });
})();
