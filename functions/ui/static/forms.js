// Form pieces shared by the pages: repeatable key/value rows and a small command-line splitter.
import { h, uniqueId } from "./dom.js";

/**
 * A fieldset of repeatable rows. ``columns`` describe each row's inputs: {key, label, type, options,
 * placeholder}. rows.values() returns one object per filled-in row.
 */
export function repeatableRows({ legend, columns, addLabel, hint }) {
  const body = h("div", { class: "rows" });
  const add = h("button", { type: "button", class: "secondary small" }, addLabel);
  const set = h("fieldset", { class: "repeatable" }, h("legend", {}, legend), hint ? h("p", { class: "hint" }, hint) : null, body, add);
  let count = 0;

  function addRow(initial = {}) {
    count += 1;
    const number = count;
    const inputs = {};
    const row = h("div", { class: "kv-row" });
    for (const column of columns) {
      const id = uniqueId(column.key);
      let control;
      if (column.options) {
        control = h("select", { id, name: column.key }, column.options.map((option) => h("option", { value: option, selected: option === initial[column.key] }, option)));
      } else {
        control = h("input", { id, name: column.key, type: column.type ?? "text", autocomplete: "off", spellcheck: "false", placeholder: column.placeholder ?? null, value: initial[column.key] ?? null, min: column.min ?? null, max: column.max ?? null });
      }
      inputs[column.key] = control;
      row.append(h("div", { class: "field compact" }, h("label", { for: id }, `${column.label} ${number}`), control));
    }
    const remove = h("button", { type: "button", class: "secondary small", "aria-label": `Remove ${legend.toLowerCase()} row ${number}` }, "Remove");
    remove.addEventListener("click", () => {
      row.remove();
      add.focus();
    });
    row.append(remove);
    row._inputs = inputs;
    body.append(row);
    return inputs;
  }

  add.addEventListener("click", () => {
    const inputs = addRow();
    Object.values(inputs)[0].focus();
  });

  return {
    node: set,
    addRow,
    values() {
      return [...body.children]
        .map((row) => Object.fromEntries(Object.entries(row._inputs).map(([key, input]) => [key, input.value.trim()])))
        .filter((entry) => Object.values(entry).some((value, index) => index === 0 && value !== ""));
    },
  };
}

/** Split a command line into arguments: spaces separate, '...' and "..." quote, \ escapes. */
export function splitCommand(text) {
  const args = [];
  let current = "";
  let quote = null;
  let started = false;
  for (let i = 0; i < text.length; i += 1) {
    const char = text[i];
    if (quote) {
      if (char === quote) quote = null;
      else if (char === "\\" && quote === '"' && i + 1 < text.length) current += text[++i];
      else current += char;
    } else if (char === "'" || char === '"') {
      quote = char;
      started = true;
    } else if (char === "\\" && i + 1 < text.length) {
      current += text[++i];
      started = true;
    } else if (/\s/.test(char)) {
      if (started) args.push(current);
      current = "";
      started = false;
    } else {
      current += char;
      started = true;
    }
  }
  if (quote) throw new Error(`the command has an unclosed ${quote} quote`);
  if (started) args.push(current);
  return args;
}
