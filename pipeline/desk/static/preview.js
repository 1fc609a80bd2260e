// Live preview of a story's body while it is written.  Optional: without it the Preview button does the same.
(function () {
  "use strict";
  var form = document.querySelector("form[data-preview-url]");
  if (!form) { return; }
  var body = form.querySelector("textarea[name=body]");
  var target = document.getElementById("live-preview");
  var token = form.querySelector("input[name=csrf_token]");
  var timer = null;
  function refresh() {
    var data = new URLSearchParams();
    data.set("body", body.value);
    var slug = form.querySelector("input[name=slug]");
    if (slug) { data.set("slug", slug.value); }
    fetch(form.dataset.previewUrl, {method: "POST", body: data, credentials: "same-origin",
                                    headers: {"X-CSRFToken": token.value}})
      .then(function (response) { return response.ok ? response.text() : null; })
      .then(function (html) { if (html !== null) { target.innerHTML = html; } });
  }
  body.addEventListener("input", function () { clearTimeout(timer); timer = setTimeout(refresh, 300); });
})();
