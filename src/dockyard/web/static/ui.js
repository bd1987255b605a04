// Dockyard UI: progressive enhancement only; every page works without this file.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  // copy buttons (hidden until this script shows them)
  for (const button of document.querySelectorAll("button.copy[data-copy]")) {
    button.hidden = false;
    button.addEventListener("click", async () => {
      const text = button.dataset.copy;
      try {
        await navigator.clipboard.writeText(text);
      } catch (e) {
        const area = document.createElement("textarea");
        area.value = text;
        document.body.appendChild(area);
        area.select();
        document.execCommand("copy");
        area.remove();
      }
      button.textContent = "Copied";
      setTimeout(() => { button.textContent = "Copy"; }, 1500);
    });
  }
  // search as you type: the server renders the results, this swaps them in
  const input = document.querySelector("input[data-live]");
  const results = document.getElementById("results");
  if (input && results) {
    let timer = 0;
    input.addEventListener("input", () => {
      clearTimeout(timer);
      timer = setTimeout(async () => {
        const url = input.dataset.live + "?partial=1&q=" + encodeURIComponent(input.value);
        const response = await fetch(url, { credentials: "same-origin" });
        if (response.ok) {
          const doc = new DOMParser().parseFromString(await response.text(), "text/html");
          const fresh = doc.getElementById("results");
          const current = document.getElementById("results");
          if (fresh && current) current.replaceWith(fresh);
        }
      }, 200);
    });
  }
  // table filters (the server filters too, when the form is sent without script)
  for (const box of document.querySelectorAll("input[data-filter]")) {
    const table = document.getElementById(box.dataset.filter);
    if (!table) continue;
    box.addEventListener("input", () => {
      const text = box.value.toLowerCase();
      for (const row of table.tBodies[0].rows) {
        row.hidden = text !== "" && !row.textContent.toLowerCase().includes(text);
      }
    });
  }
});
