(function () {
  "use strict";
  // Sorts each <tbody> of a table on its own: the ranked rows and the unranked partial rows
  // (tbody.partial) never mix, so a partial result stays below every ranked one.
  function missing(v) { return v === undefined || v === null || v === ""; }
  function sortBody(body, col, dir, numeric) {
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var va = a.cells[col].getAttribute("data-value"), vb = b.cells[col].getAttribute("data-value");
      var ma = missing(va), mb = missing(vb);
      var oa = +a.getAttribute("data-order"), ob = +b.getAttribute("data-order");
      if (ma || mb) { return ma && mb ? oa - ob : (ma ? 1 : -1); }
      var c = numeric ? parseFloat(va) - parseFloat(vb) : va.localeCompare(vb);
      if (c === 0) { return oa - ob; }
      return dir === "ascending" ? c : -c;
    });
    for (var i = 0; i < rows.length; i++) { body.appendChild(rows[i]); }
  }
  function sortTable(table, col, th) {
    var dir = th.getAttribute("aria-sort") === "ascending" ? "descending" : "ascending";
    var ths = table.tHead.rows[0].cells;
    for (var k = 0; k < ths.length; k++) { ths[k].setAttribute("aria-sort", "none"); }
    th.setAttribute("aria-sort", dir);
    var numeric = th.getAttribute("data-type") === "num";
    for (var b = 0; b < table.tBodies.length; b++) { sortBody(table.tBodies[b], col, dir, numeric); }
  }
  var tables = document.querySelectorAll("table.sortable");
  Array.prototype.forEach.call(tables, function (table) {
    var ths = table.tHead.rows[0].cells;
    Array.prototype.forEach.call(ths, function (th, col) {
      th.tabIndex = 0;
      th.addEventListener("click", function () { sortTable(table, col, th); });
      th.addEventListener("keydown", function (ev) {
        if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); sortTable(table, col, th); }
      });
    });
  });
})();
