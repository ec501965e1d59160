/* archive-restore report: the before/after sliders, their repairs overlays and the status filter. No network, no libraries. */
(function () {
  "use strict";
  function bindSlider(compare) {
    var slider = compare.querySelector("input.slider");
    if (!slider) { return; }
    var show = function () { compare.style.setProperty("--pos", slider.value + "%"); };
    slider.addEventListener("input", show);
    slider.addEventListener("change", show);
    show();
  }
  function bindRepairs(box) {
    var compare = box.parentElement.previousElementSibling;  /* the toggle's label follows its slider */
    if (!compare || !compare.classList.contains("compare")) { return; }
    var show = function () { compare.classList.toggle("repairs-on", box.checked); };
    box.addEventListener("change", show);
    show();
  }
  function bindFilter(chip) {
    chip.addEventListener("click", function () {
      var status = chip.getAttribute("data-filter");
      var on = document.body.getAttribute("data-filter") !== status;
      if (on) { document.body.setAttribute("data-filter", status); } else { document.body.removeAttribute("data-filter"); }
      document.querySelectorAll("button.chip").forEach(function (other) {
        other.setAttribute("aria-pressed", on && other === chip ? "true" : "false");
      });
    });
  }
  document.querySelectorAll(".compare").forEach(bindSlider);
  document.querySelectorAll("input.show-repairs").forEach(bindRepairs);
  document.querySelectorAll("button.chip[data-filter]").forEach(bindFilter);
}());
