// dropstack's sample client: shows the notes the API keeps (GET /api/notes) and adds one.
(function () {
  "use strict";
  var list = document.getElementById("notes");
  var form = document.getElementById("add");
  function show(notes) {
    list.textContent = "";
    notes.forEach(function (n) {
      var li = document.createElement("li");
      li.textContent = n.body;
      list.appendChild(li);
    });
  }
  function load() {
    fetch("/api/notes").then(function (r) { return r.json(); }).then(function (d) { show(d.notes || []); });
  }
  form.addEventListener("submit", function (e) {
    e.preventDefault();
    var body = form.elements.body.value;
    fetch("/api/notes", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ body: body }) })
      .then(function () { form.reset(); load(); });
  });
  load();
})();
