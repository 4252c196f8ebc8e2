// Account: who is signed in, their plan, and sign out.
import { api, signOut } from "../api.js";
import { h, details } from "../dom.js";
import { announce } from "../messages.js";

export async function accountPage(ctx) {
  ctx.heading("Account");
  const errors = ctx.errorBox();
  const signOutButton = h("button", { type: "button", class: "secondary" }, "Sign out");
  ctx.main.append(errors.node);
  const me = await api("GET", "/auth/me");
  if (!ctx.alive()) return;
  ctx.main.append(
    h(
      "section",
      { class: "card", "aria-labelledby": "who-title" },
      h("h2", { id: "who-title" }, "Signed in as"),
      details([
        ["Email", me.email],
        ["Plan", me.plan],
        ["Role", me.role],
        ["User id", h("code", {}, me.id)],
      ]),
      h("div", { class: "actions" }, signOutButton),
    ),
  );
  signOutButton.addEventListener("click", async () => {
    signOutButton.disabled = true;
    try {
      await signOut();
      announce("Signed out.");
      ctx.navigate("/signin");
    } catch (error) {
      errors.show(error);
      signOutButton.disabled = false;
    }
  });
}
