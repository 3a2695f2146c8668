package za

// This file is the maintained list of South African banks kluis knows: the
// data of GET /v1/banks?country=ZA and of the account-number checks. Keep it
// data only; the rules that read it live in account.go.
//
// Checked on 2026-12-05 against public documentation (BanksChecked):
//
//   - universal branch codes: the bank-code tables published by Netcash
//     (help.netcash.co.za, "Account number tips"), TransferZero's South
//     African bank-payment documentation (transferzero/api-documentation,
//     _includes/corridors/zar-bank.md), ourpower.co.za's branch-code table
//     and banklink.co.za's "South African bank details explained"; every
//     code below is given alike by at least two of them;
//   - account-number lengths: Netcash's "Account number tips" where it
//     names the bank (ABSA 8 to 11 digits; Capitec 10; First National Bank
//     11; Nedbank 10, and 11 for its former FBC accounts). For the other
//     banks no public source gives a length, so they take the general
//     envelope of South African account numbers (DefaultMinDigits to
//     DefaultMaxDigits; banklink.co.za: "9–11 digits depending on bank",
//     widened below to 7 for older numbers that public payment forms
//     accept).
//
// Left out on purpose: Old Mutual Bank, whose code one public table gives
// as 462005 while every other source gives 462005 to Bidvest Bank; a bank is
// added here only once two sources agree on its code.
//
// No bank's check-digit algorithm is applied: South African banks' account
// check-digit verification (CDV) rules are published by BankservAfrica to
// its members only, and kluis does not guess at them.

// BanksChecked is the date the list below was last checked.
const BanksChecked = "2026-12-05"

// Default account-number lengths for a bank with no documented length.
const (
	DefaultMinDigits = 7
	DefaultMaxDigits = 11
)

// banks is the list, in the order GET /v1/banks answers it (by name).
var banks = []Bank{
	{ID: "za_absa", Name: "Absa Bank", UniversalBranchCode: "632005", MinDigits: 8, MaxDigits: 11},
	{ID: "za_african_bank", Name: "African Bank", UniversalBranchCode: "430000"},
	{ID: "za_bidvest", Name: "Bidvest Bank", UniversalBranchCode: "462005"},
	{ID: "za_capitec", Name: "Capitec Bank", UniversalBranchCode: "470010", MinDigits: 10, MaxDigits: 10},
	{ID: "za_discovery", Name: "Discovery Bank", UniversalBranchCode: "679000"},
	{ID: "za_fnb", Name: "First National Bank", UniversalBranchCode: "250655", MinDigits: 11, MaxDigits: 11},
	{ID: "za_investec", Name: "Investec Bank", UniversalBranchCode: "580105"},
	{ID: "za_nedbank", Name: "Nedbank", UniversalBranchCode: "198765", MinDigits: 10, MaxDigits: 11},
	{ID: "za_standard_bank", Name: "Standard Bank", UniversalBranchCode: "051001"},
	{ID: "za_tymebank", Name: "TymeBank", UniversalBranchCode: "678910"},
}
