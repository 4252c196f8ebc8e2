// An accessible confirmation dialog: the native <dialog> opened with showModal() traps focus, closes on
// Escape and returns focus to the button that opened it.
import { h } from "./dom.js";

/** Resolves true when the user confirms, false when they cancel or press Escape. */
export function confirmDialog({ title, message, confirmLabel = "Delete", danger = true }) {
  return new Promise((resolve) => {
    const opener = document.activeElement;
    const titleId = "confirm-title";
    const messageId = "confirm-message";
    const cancel = h("button", { type: "button", class: "secondary", value: "cancel" }, "Cancel");
    const confirm = h("button", { type: "button", class: danger ? "danger" : "primary", value: "confirm" }, confirmLabel);
    const dialog = h(
      "dialog",
      { class: "confirm-dialog", "aria-labelledby": titleId, "aria-describedby": messageId },
      h("h2", { id: titleId }, title),
      h("p", { id: messageId }, message),
      h("div", { class: "actions" }, cancel, confirm),
    );
    let answered = false;
    const finish = (answer) => {
      if (answered) return;
      answered = true;
      dialog.close();
      dialog.remove();
      if (opener instanceof HTMLElement && opener.isConnected) opener.focus();
      resolve(answer);
    };
    cancel.addEventListener("click", () => finish(false));
    confirm.addEventListener("click", () => finish(true));
    dialog.addEventListener("cancel", (event) => {
      event.preventDefault();
      finish(false);
    });
    document.body.append(dialog);
    dialog.showModal();
    cancel.focus(); // the safe choice has focus first
  });
}
